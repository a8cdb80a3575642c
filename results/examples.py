"""Ten random test windows (seed 9) with every system's reply, for docs/results.md.

    python results/examples.py > examples.md
"""
import random

from onmt_mirror.evaluate.inputs import split_src

D = "results/dailydialog/"
systems = ["mirror", "mirror_paper", "cvae", "seq2seq", "hred", "mmi", "dc", "dc_mmi"]
src = open("data/dailydialog/test.src", encoding="utf-8").read().splitlines()
ref = open(D + "ref.txt", encoding="utf-8").read().splitlines()
hyp = {s: open(D + s + ".txt", encoding="utf-8").read().splitlines() for s in systems}
for i in sorted(random.Random(9).sample(range(len(src)), 10)):
    context, x = split_src(src[i])
    c = context[-1]
    print("**%d.** c: %s / x: %s / reference: %s\n" % (i + 1, c, x, ref[i]))
    for s in systems:
        print("- %s: %s" % (s, hyp[s][i]))
    print()
