"""PNG charts of the metric table and of the pairwise (Table 1) results.

People compare bars faster than columns of numbers. The Agg backend is used so that
plotting works on machines without a display (CI).
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

OVERLAP = [("bleu1", "BLEU-1"), ("bleu2", "BLEU-2"), ("bleu3", "BLEU-3"), ("bleu4", "BLEU-4"),
           ("sacrebleu", "sacreBLEU"), ("distinct1", "Dist-1"), ("distinct2", "Dist-2"),
           ("top10_share", "Top-10 share")]
EMBEDDING = [("emb_average", "Average"), ("emb_extrema", "Extrema"), ("emb_greedy", "Greedy")]


def _grouped(ax, scores, metrics, scale, errors):
    names = list(scores)
    x = np.arange(len(metrics))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [scores[name][key] * scale for key, _ in metrics]
        err = [scores[name][key + "_ci95"] for key, _ in metrics] if errors else None
        ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, yerr=err, capsize=3,
               label=name)
    ax.set_xticks(x, [label for _, label in metrics], rotation=30, ha="right")
    ax.grid(axis="y", alpha=0.3)


def plot_metrics(scores, path):
    """Grouped bars per system: word-overlap metrics in %, embedding metrics with 95% bars."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=[8, 3])
    _grouped(left, scores, OVERLAP, 100, errors=False)
    left.set_ylabel("%")
    left.set_title("Word overlap and diversity")
    _grouped(right, scores, EMBEDDING, 1, errors=True)
    right.set_title("Embedding similarity (95% interval)")
    left.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_pairwise(rows, path, title="Pairwise comparison"):
    """Stacked horizontal bars of wins / ties / losses, one bar per comparison."""
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.6 * len(rows)))
    labels = ["%s vs %s" % (r["system"], r["other"]) for r in rows]
    left = np.zeros(len(rows))
    for key, colour in (("wins", "#2a9d8f"), ("ties", "#bbbbbb"), ("losses", "#e76f51")):
        share = np.array([100.0 * r[key] / max(r["n"], 1) for r in rows])
        ax.barh(labels, share, left=left, color=colour, label=key)
        for y, (start, width) in enumerate(zip(left, share)):
            if width >= 6:
                ax.text(start + width / 2, y, "%.0f%%" % width, ha="center", va="center")
        left += share
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of judgements")
    ax.invert_yaxis()
    ax.set_title(title)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
