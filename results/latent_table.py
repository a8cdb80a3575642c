"""The table of docs/latent.md, from the study's raw files under results/latent/.

    python results/latent_table.py results/latent > results/latent/table.md

Per run (results/latent/<run>/): the validation diagnostics at the selected checkpoint
(train.log: the step of the best prior-z perplexity), the share of test windows whose
reply changes when z is a prior sample instead of the prior mean (test.mean.txt vs
test.sample.txt), and per decoding the evaluator's scores (scores.json) and the pairwise
judge's wins and losses (pairwise_<decoding>.json, the first system against the others).
"""
import json
import os
import re
import sys

BEST = re.compile(r"Best validation perplexity so far .*_step_(\d+)\.pt")
VALID = re.compile(r"Mirror validation; (.*)")
PPL = re.compile(r"Validation perplexity: ([0-9.e+-]+)")


def validation_at_best(log_path):
    """(step, {diagnostic: value}) of the validation that selected the kept checkpoint:
    the "Mirror validation" line logged just before its "Best validation" line; for a
    stock model the lowest "Validation perplexity"."""
    last, best, stock = {}, (None, {}), []
    with open(log_path, encoding="utf-8") as f:
        for line in f:
            m = VALID.search(line)
            if m:
                last = {k: float(v) for k, v in (
                    kv.split(": ") for kv in m.group(1).strip().split("; "))}
            m = BEST.search(line)
            if m:
                best = (int(m.group(1)), last)
            m = PPL.search(line)
            if m:
                stock.append(float(m.group(1)))
    if best[0] is None and stock:
        return None, {"ppl_y_cxz": min(stock)}
    return best


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def changed_share(folder):
    mean, sample = (os.path.join(folder, "test.%s.txt" % k) for k in ("mean", "sample"))
    if not (os.path.exists(mean) and os.path.exists(sample)):
        return None
    a, b = lines(mean), lines(sample)
    return sum(x != y for x, y in zip(a, b)) / len(a)


def judge_cells(root, system):
    """"wins/losses" of `system` against each other system of any pairwise file."""
    cells = {}
    for name in sorted(os.listdir(root)):
        if not (name.startswith("pairwise") and name.endswith(".json")):
            continue
        with open(os.path.join(root, name), encoding="utf-8") as f:
            for row in json.load(f)["rows"]:
                if row["system"] == system:
                    cells[row["other"]] = "%.1f / %.1f" % (
                        100.0 * row["wins"] / row["n"], 100.0 * row["losses"] / row["n"])
    return cells


def fmt(value, spec="%.3g"):
    return "—" if value is None else spec % value


def main(root):
    with open(os.path.join(root, "scores.json"), encoding="utf-8") as f:
        scores = json.load(f)
    runs = sorted(d for d in os.listdir(root) if os.path.exists(
        os.path.join(root, d, "train.log")))
    head = ["run", "step", "KL", "AU", "MI", "ppl post / prior", "IW-NLL",
            "sample changes reply"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for run in runs:
        step, v = validation_at_best(os.path.join(root, run, "train.log"))
        post = v.get("ppl_y_cxz")
        prior = v.get("ppl_y_cxz_prior")
        print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            run, fmt(step, "%d"), fmt(v.get("kl")), fmt(v.get("active_units"), "%d"),
            fmt(v.get("mi")), "%s / %s" % (fmt(post), fmt(prior)), fmt(v.get("iw_nll")),
            fmt(changed_share(os.path.join(root, run)), "%.3f")))
    print()
    judged = {}
    for system in scores:
        judged[system] = judge_cells(root, system)
    others = sorted({o for cells in judged.values() for o in cells})
    head = ["decoding", "BLEU-1", "BLEU-2", "Dist-1", "Dist-2", "length", "top-10 share"]
    head += ["judge vs %s (W / L %%)" % o for o in others]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for system, s in scores.items():
        cells = [system] + ["%.2f" % (100 * s[k]) for k in ("bleu1", "bleu2", "distinct1",
                                                             "distinct2")]
        cells += ["%.1f" % s["avg_len"], "%.1f%%" % (100 * s["top10_share"])]
        cells += [judged[system].get(o, "") for o in others]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results/latent")
