"""Wins / losses / ties of one system against another, in the format of the paper's Table 1.

Both the automatic judge and the human kit produce outcomes per example (+1 the system
wins, -1 it loses, 0 tie), one column per judge; this module counts them and adds a
percentile-bootstrap 95% interval that resamples examples (judges of one example move
together, since their judgements are not independent).
"""
import numpy as np

OUTCOMES = {"wins": 1, "losses": -1, "ties": 0}


def table1_row(system, other, outcomes, reps=1000, seed=0, **extra):
    """outcomes [n_examples] or [n_examples, n_judges] of `system` against `other`."""
    o = np.asarray(outcomes).reshape(len(outcomes), -1)
    row = {"system": system, "other": other, "n": int(o.size)}
    row.update({key: int((o == value).sum()) for key, value in OUTCOMES.items()})
    if len(o):
        rng = np.random.default_rng(seed)
        samples = o[rng.integers(0, len(o), size=(reps, len(o)))]  # [reps, n, judges]
        for key, value in OUTCOMES.items():
            shares = (samples == value).mean(axis=(1, 2))
            row[key + "_ci95"] = [float(np.percentile(shares, 2.5)), float(np.percentile(shares, 97.5))]
    row.update(extra)
    return row


def markdown(rows, extra=()):
    """Table 1 as Markdown: shares in % with their bootstrap interval, plus `extra` columns."""
    head = ["Comparison", "Wins %", "Losses %", "Ties %", "n"] + [label for _, label in extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = ["%s vs %s" % (r["system"], r["other"])]
        for key in OUTCOMES:
            share = 100.0 * r[key] / max(r["n"], 1)
            low, high = (100.0 * x for x in r.get(key + "_ci95", (0.0, 0.0)))
            cells.append("%.1f [%.1f, %.1f]" % (share, low, high))
        cells.append(str(r["n"]))
        for key, _ in extra:
            value = r.get(key)
            cells.append("n/a" if value is None else "%.3f" % value)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
