"""Ten random test windows (seed 9) with every system's reply, for docs/results.md.

    python results/examples.py [--results results/dailydialog] [--src data/dailydialog/test.src]
        [--systems mirror,cvae,...] > examples.md
"""
import argparse
import os
import random

from onmt_mirror.evaluate.inputs import split_src

SYSTEMS = "mirror,mirror_paper,cvae,seq2seq,hred,mmi,dc,dc_mmi"


def lines(path):
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default="results/dailydialog",
                        help="folder of <system>.txt predictions and ref.txt")
    parser.add_argument("--src", default="data/dailydialog/test.src")
    parser.add_argument("--systems", default=SYSTEMS, help="comma-separated, in order")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args(argv)
    systems = args.systems.split(",")
    src, ref = lines(args.src), lines(os.path.join(args.results, "ref.txt"))
    hyp = {s: lines(os.path.join(args.results, s + ".txt")) for s in systems}
    for i in sorted(random.Random(args.seed).sample(range(len(src)), args.n)):
        context, x = split_src(src[i])
        print("**%d.** c: %s / x: %s / reference: %s\n" % (i + 1, context[-1], x, ref[i]))
        for s in systems:
            print("- %s: %s" % (s, hyp[s][i]))
        print()


if __name__ == "__main__":
    main()
