"""PNG charts of the metric table and of the pairwise (Table 1) results.

People compare bars faster than columns of numbers, but only when each bar is readable:
the metric chart has one panel per metric family, each with its own range (BLEU of 0.5-3%
next to a Top-10 share of 49% would be slivers on a shared scale), a value label on every
mark, and the direction that is better in its title (a lower Top-10 share is better).
Embedding similarities differ in the third decimal, so each gets its own panel, zoomed
to the values, drawn as points with their 95% interval (a bar would imply a zero
baseline). The Agg backend is used so that plotting works without a display (CI).
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

# (title, [(key, label)], what is better); values are fractions, plotted in %
BAR_FAMILIES = [
    ("BLEU, %", [("bleu1", "BLEU-1"), ("bleu2", "BLEU-2"), ("bleu3", "BLEU-3"),
                 ("bleu4", "BLEU-4"), ("sacrebleu", "sacreBLEU")], "higher"),
    ("Distinct n-grams, %", [("distinct1", "Dist-1"), ("distinct2", "Dist-2")], "higher"),
    ("Top-10 share, %", [("top10_share", "outputs that are one of\nthe 10 most frequent")],
     "lower"),
]
EMBEDDING = [("emb_average", "Embedding Average"), ("emb_extrema", "Embedding Extrema"),
             ("emb_greedy", "Embedding Greedy")]
BETTER = {"higher": "\u2191 higher is better", "lower": "\u2193 lower is better"}
BETTER_COLOUR = {"higher": "#1b7837", "lower": "#b2182b"}


def _title(ax, title, better):
    """The family's name, and under it in colour which direction is better."""
    ax.set_title(title, fontsize=10, loc="left", pad=17)
    ax.text(0, 1.015, BETTER[better], transform=ax.transAxes, fontsize=9,
            color=BETTER_COLOUR[better], fontweight="bold", va="bottom")


def _percent(value):
    """As the Markdown table: two decimals, one from 10 on (0.49, 3.41, 49.4)."""
    return "%.2f" % value if value < 10 else "%.1f" % value


def _bars(ax, scores, metrics, colours):
    """Grouped bars from 0, one group per metric, each bar labelled with its value."""
    names = list(scores)
    width = 0.8 / len(names)
    top = 0.0
    for i, name in enumerate(names):
        x = np.arange(len(metrics)) + (i - (len(names) - 1) / 2) * width
        values = [100 * scores[name][key] for key, _ in metrics]
        ax.bar(x, values, width, color=colours[name], label=name)
        for xi, v in zip(x, values):
            ax.text(xi, v, " " + _percent(v), ha="center", va="bottom", rotation=90,
                    fontsize=7)
        top = max(top, *values)
    ax.set_ylim(0, top * 1.3 if top > 0 else 1)
    ax.set_xticks(np.arange(len(metrics)), [label for _, label in metrics])
    ax.grid(axis="y", alpha=0.3)


def _points(ax, scores, key, colours):
    """One point per system with its 95% interval, on a range fitted to the values."""
    names = list(scores)
    values = np.array([scores[n][key] for n in names])
    errors = np.array([scores[n].get(key + "_ci95", 0.0) for n in names])
    for i, name in enumerate(names):
        ax.errorbar(i, values[i], yerr=errors[i], fmt="o", color=colours[name], capsize=3)
        ax.text(i + 0.15, values[i], "%.3f" % values[i], va="center", fontsize=7,
                rotation=90)
    low, high = (values - errors).min(), (values + errors).max()
    pad = max(high - low, 0.002) * 0.25
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlim(-0.6, len(names) - 0.3)
    ax.set_xticks([])
    ax.grid(axis="y", alpha=0.3)


def metrics_figure(scores):
    """The metric chart as a matplotlib Figure (plot_metrics saves it)."""
    names = list(scores)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {name: cycle[i % len(cycle)] for i, name in enumerate(names)}
    fig = plt.figure(figsize=(15, 8.5))
    grid = fig.add_gridspec(2, 4, width_ratios=[5, 2, 1.6, 1.4], hspace=0.35, wspace=0.3)
    for col, (title, metrics, better) in enumerate(BAR_FAMILIES):
        ax = fig.add_subplot(grid[0, col])
        _bars(ax, scores, metrics, colours)
        _title(ax, title, better)
    bottom = grid[1, :3].subgridspec(1, len(EMBEDDING), wspace=0.35)
    for col, (key, title) in enumerate(EMBEDDING):
        ax = fig.add_subplot(bottom[0, col])
        _points(ax, scores, key, colours)
        _title(ax, title + " (95% interval; zoomed)", "higher")
    legend = fig.add_subplot(grid[:, 3])
    legend.axis("off")
    legend.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=colours[n]) for n in names],
                  labels=names, loc="center left", frameon=False, title="System")
    return fig


def plot_metrics(scores, path):
    """Write the metric chart of {system: metrics} to `path` (PNG)."""
    fig = metrics_figure(scores)
    fig.savefig(path, dpi=120, bbox_inches="tight")
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
