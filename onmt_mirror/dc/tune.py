"""α/β grid search for DC on the validation set, through the stock onmt_translate.

Each grid point decodes the validation histories with `-dc_alpha α -dc_beta β` and is scored
against the references with the package's evaluator (onmt_mirror.evaluate.metrics). The
objective is a '+'-joined sum of its metric names, by default BLEU-2 alone. That choice is
ours; the paper's text does not say how α and β were chosen. Distinct-n is reported for
every point but is not in the default objective: large weights push it up with nonsense
(on the demo, α = 5 gave Distinct-2 0.23 at BLEU-2 0.0003). Writes OUT/tune.json (every
point) and OUT/tune.md, and prints the best pair.
"""
import json
import os
import shutil
import subprocess
import sys
import time

from onmt_mirror.dialogue import read_lines
from onmt_mirror.errors import MirrorError


def add_tune_arguments(p):
    p.add_argument("--model", required=True, help="forward checkpoint")
    p.add_argument("--dc-model", required=True, help="folder written by `fit`")
    p.add_argument("--src", required=True, help="validation histories (valid.src)")
    p.add_argument("--tgt", required=True, help="validation references (valid.tgt)")
    p.add_argument("--out", required=True, help="folder for predictions and results")
    p.add_argument("--alphas", default="0,0.5,1.5,3", help="comma-separated α values")
    p.add_argument("--betas", default="0,1,2,4", help="comma-separated β values")
    p.add_argument("--objective", default="bleu2", help="'+'-joined metric "
                   "names of onmt_mirror.evaluate.metrics.overlap_metrics to maximise")
    p.add_argument("--limit", type=int, default=0, help="use the first N validation "
                   "windows only (0: all)")


def _floats(text):
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise MirrorError("not a comma-separated list of numbers: %r" % text) from None


def _translate_cmd():
    exe = os.path.join(os.path.dirname(sys.executable), "onmt_translate")
    return exe if os.path.exists(exe) else (shutil.which("onmt_translate") or exe)


def tune(args, extra):
    from onmt_mirror.evaluate.metrics import overlap_metrics

    os.makedirs(args.out, exist_ok=True)
    src, refs = list(read_lines(args.src)), list(read_lines(args.tgt))
    if len(src) != len(refs):
        raise MirrorError("%s has %d lines, %s has %d" % (args.src, len(src), args.tgt,
                                                          len(refs)))
    if args.limit:
        src, refs = src[: args.limit], refs[: args.limit]
    src_path = os.path.join(args.out, "valid.src")
    with open(src_path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in src))
    terms = [t.strip() for t in args.objective.split("+") if t.strip()]
    rows = []
    for alpha in _floats(args.alphas):
        for beta in _floats(args.betas):
            pred = os.path.join(args.out, "pred_a%g_b%g.txt" % (alpha, beta))
            cmd = [_translate_cmd(), "-model", args.model, "-src", src_path, "-output",
                   pred, "-dc_model", args.dc_model, "-dc_alpha", str(alpha),
                   "-dc_beta", str(beta)] + list(extra)
            start = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise MirrorError("onmt_translate failed (%s): %s" % (
                    " ".join(cmd), proc.stderr.strip().splitlines()[-1:]))
            with open(pred, encoding="utf-8") as f:
                hyps = f.read().splitlines()
            scores = overlap_metrics(refs, hyps)
            unknown = [t for t in terms if t not in scores]
            if unknown:
                raise MirrorError("--objective: unknown metric(s) %s; known: %s" % (
                    ", ".join(unknown), ", ".join(sorted(k for k, v in scores.items()
                                                         if isinstance(v, float)))))
            row = {"alpha": alpha, "beta": beta, "objective": sum(scores[t] for t in terms),
                   "seconds": round(time.time() - start, 1), "pred": pred}
            row.update({k: v for k, v in scores.items() if isinstance(v, (int, float))})
            rows.append(row)
            print("alpha %-5g beta %-5g %s %.4f  (%s)" % (
                alpha, beta, args.objective, row["objective"], ", ".join(
                    "%s %.4f" % (t, scores[t]) for t in terms)), flush=True)
    best = max(rows, key=lambda r: r["objective"])
    with open(os.path.join(args.out, "tune.json"), "w", encoding="utf-8") as f:
        json.dump({"objective": args.objective, "windows": len(src), "best": best,
                   "grid": rows, "onmt_translate_args": extra}, f, indent=2)
    cols = ["alpha", "beta", "objective"] + terms + [
        c for c in ("bleu2", "distinct1", "distinct2", "avg_len", "top10_share")
        if c not in terms]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(
            "%g" % r[c] if c in ("alpha", "beta") else "%.4f" % r[c] for c in cols) + " |")
    with open(os.path.join(args.out, "tune.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("best: -dc_alpha %g -dc_beta %g (%s %.4f); table in %s" % (
        best["alpha"], best["beta"], args.objective, best["objective"],
        os.path.join(args.out, "tune.md")))
    return best
