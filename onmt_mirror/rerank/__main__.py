"""python -m onmt_mirror.rerank {score,tune,apply}: MMI-bidi / Mirror-Dec3 re-ranking.

    # 1. score every candidate of an `onmt_translate -n_best N` list (once, cached as TSV)
    python -m onmt_mirror.rerank score --src valid.src --nbest valid.nbest \\
        --forward forward.pt --backward backward.pt --output valid.scores.tsv
    # 2. pick λ, γ on the validation set (grid search, BLEU by the evaluator's code)
    python -m onmt_mirror.rerank tune --scores valid.scores.tsv --ref valid.tgt \\
        --output mmi.json
    # 3. re-rank the test list with them
    python -m onmt_mirror.rerank apply --scores test.scores.tsv --params mmi.json \\
        --output test.mmi.txt

score = log p(y|c,x) + λ · log p_back + γ · |y|; p_back is log p(x|y) of a backward model
trained with the mirror_backward transform (MMI), or Mirror's Dec3 log p(x|c,z,y) when
--backward is a Mirror checkpoint (or --backward-kind dec3). See docs/baselines.md.

Mirror with K samples of z scores each candidate with the z it was decoded with, which only
the decoding run knows: there `onmt_translate -mirror_num_z K -mirror_rerank_scores FILE`
replaces step 1, `tune` reads FILE, and `onmt_translate -mirror_rerank
-mirror_rerank_lambda λ -mirror_rerank_gamma γ` decodes with the result (docs/decoding.md).
"""
import argparse
import json
import sys

from onmt_mirror.dialogue import read_lines
from onmt_mirror.errors import MirrorError, run_command
from onmt_mirror.rerank import nbest as nb


def _lines(path):
    return list(read_lines(path))


def cmd_score(args):
    import onmt  # noqa: F401  (the plugin registers itself on this import)

    from onmt_mirror.rerank.scorer import CheckpointScorer

    sources = _lines(args.src)
    groups = nb.read_nbest(args.nbest, len(sources), args.n_best)
    pairs = [(sources[i], cand) for i, g in enumerate(groups) for cand, _ in g]
    if args.forward:
        fwd = CheckpointScorer.load(args.forward, "forward", args.gpu, args.batch_size)
        fwd_scores = fwd.score(pairs)
    elif all(s is not None for g in groups for _, s in g):
        fwd_scores = [s for g in groups for _, s in g]
    else:
        raise MirrorError("give --forward CKPT (the n-best lines carry no scores: "
                          "-with_score fails in OpenNMT-py 3.5.1, bug #2583)")
    bwd = CheckpointScorer.load(args.backward, args.backward_kind, args.gpu,
                                 args.batch_size)
    bwd_scores = bwd.score(pairs)
    rows, k = [], 0
    for i, g in enumerate(groups):
        for rank, (cand, _) in enumerate(g):
            rows.append({"src_id": i, "rank": rank, "length": len(cand.split()),
                         "fwd": fwd_scores[k], "bwd": bwd_scores[k], "candidate": cand})
            k += 1
    nb.write_scores(args.output, rows)
    print("rerank score: %d sources x %d candidates, backward scorer %s -> %s"
          % (len(groups), len(groups[0]), bwd.kind, args.output))


def cmd_tune(args):
    groups = nb.read_scores(args.scores)
    refs = _lines(args.ref)
    best, table = nb.grid_search(groups, refs, nb.parse_grid(args.lambdas),
                                 nb.parse_grid(args.gammas), args.objective)
    base = next(r for r in table if r["lambda"] == 0 and r["gamma"] == 0) \
        if any(r["lambda"] == 0 and r["gamma"] == 0 for r in table) else None
    result = {"lambda": best["lambda"], "gamma": best["gamma"],
              "objective": args.objective, "value": best[args.objective],
              "changed": best["changed"], "sources": len(groups),
              "forward_only_value": base[args.objective] if base else None,
              "grid": table}
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print("rerank tune: best lambda %g gamma %g: %s %.4f (forward only: %s), %d of %d "
          "choices changed -> %s" % (
              best["lambda"], best["gamma"], args.objective, best[args.objective],
              "%.4f" % base[args.objective] if base else "n/a", best["changed"],
              len(groups), args.output))


def cmd_apply(args):
    groups = nb.read_scores(args.scores)
    if args.params:
        with open(args.params, encoding="utf-8") as f:
            try:
                params = json.load(f)
                lam, gamma = float(params["lambda"]), float(params["gamma"])
            except (ValueError, TypeError, KeyError):
                raise MirrorError("%s: not the JSON of `rerank tune` (with lambda and "
                                  "gamma)" % args.params) from None
    elif args.lam is not None and args.gamma is not None:
        lam, gamma = args.lam, args.gamma
    else:
        raise MirrorError("give --params FILE or both --lambda and --gamma")
    out = nb.rerank(groups, lam, gamma)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in out))
    print("rerank apply: lambda %g gamma %g, %d responses -> %s"
          % (lam, gamma, len(out), args.output))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m onmt_mirror.rerank",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score", help="score every n-best candidate (forward, backward)")
    s.add_argument("--src", required=True, help="the source lines given to onmt_translate")
    s.add_argument("--nbest", required=True, help="onmt_translate -n_best N output")
    s.add_argument("--n-best", type=int, default=None, help="N (checked; else inferred)")
    s.add_argument("--forward", help="forward checkpoint: recomputes log p(y|c,x)")
    s.add_argument("--backward", required=True,
                   help="backward checkpoint (mmi_backward recipe) or a Mirror checkpoint")
    s.add_argument("--backward-kind", choices=["mmi", "dec3"], default=None,
                   help="default: dec3 for a Mirror checkpoint, else mmi")
    s.add_argument("--gpu", type=int, default=None, help="GPU id; default 0 if CUDA "
                   "is available, else CPU (-1)")
    s.add_argument("--batch-size", type=int, default=64, help="pairs per batch")
    s.add_argument("--output", required=True, help="score TSV to write")
    s.set_defaults(func=cmd_score)
    t = sub.add_parser("tune", help="grid search of lambda, gamma on validation")
    t.add_argument("--scores", required=True)
    t.add_argument("--ref", required=True, help="reference responses (valid.tgt)")
    t.add_argument("--lambdas", default="0:1:0.1", help="'a,b,c' or 'start:stop:step'")
    t.add_argument("--gammas", default="-1:1:0.25", help="'a,b,c' or 'start:stop:step'")
    t.add_argument("--objective", default="bleu4",
                   help="bleu1..bleu4 (the paper's NLTK BLEU) or sacrebleu")
    t.add_argument("--output", required=True, help="JSON with lambda, gamma, the grid")
    t.set_defaults(func=cmd_tune)
    a = sub.add_parser("apply", help="write the re-ranked best response per source")
    a.add_argument("--scores", required=True)
    a.add_argument("--params", help="JSON from `tune`")
    a.add_argument("--lambda", dest="lam", type=float)
    a.add_argument("--gamma", type=float)
    a.add_argument("--output", required=True)
    a.set_defaults(func=cmd_apply)
    args = p.parse_args(argv)
    return run_command("onmt_mirror.rerank " + args.cmd, args.func, args)


if __name__ == "__main__":
    sys.exit(main())
