"""The metric chart: a panel per family with its own range, value labels, and the better
direction; embedding panels zoomed so that 0.917 and 0.919 are far apart."""
import matplotlib.pyplot as plt
import pytest

from onmt_mirror.evaluate.plots import metrics_figure, plot_metrics

BASE = {"bleu1": 0.0341, "bleu2": 0.0140, "bleu3": 0.0083, "bleu4": 0.0049,
        "sacrebleu": 0.0040, "distinct1": 0.0227, "distinct2": 0.0725, "top10_share": 0.4936,
        "emb_average": 0.917, "emb_average_ci95": 0.001, "emb_extrema": 0.694,
        "emb_extrema_ci95": 0.003, "emb_greedy": 0.803, "emb_greedy_ci95": 0.002}
SCORES = {"mirror": BASE, "seq2seq": dict(BASE, bleu1=0.0323, top10_share=0.4192,
                                          emb_average=0.919)}


@pytest.fixture
def panels():
    fig = metrics_figure(SCORES)
    yield {ax.get_title(loc="left"): ax for ax in fig.axes if ax.get_title(loc="left")}
    plt.close(fig)


def texts(ax):
    return [t.get_text() for t in ax.texts]


def test_one_panel_per_family_with_the_better_direction(panels):
    assert list(panels) == ["BLEU, %", "Distinct n-grams, %", "Top-10 share, %"] + [
        "Embedding %s (95%% interval; zoomed)" % m for m in ("Average", "Extrema", "Greedy")]
    assert "\u2193 lower is better" in texts(panels["Top-10 share, %"])
    for title, ax in panels.items():
        if title != "Top-10 share, %":
            assert "\u2191 higher is better" in texts(ax)


def test_each_panel_has_its_own_range_and_value_labels(panels):
    bleu, top10 = panels["BLEU, %"], panels["Top-10 share, %"]
    assert bleu.get_ylim()[0] == 0 and 3.41 < bleu.get_ylim()[1] < 5  # not 49% high
    assert top10.get_ylim()[0] == 0 and top10.get_ylim()[1] > 49.36
    assert [" 3.41", " 3.23"] == [t for t in texts(bleu) if t in (" 3.41", " 3.23")]
    assert " 49.4" in texts(top10) and " 41.9" in texts(top10)
    average = panels["Embedding Average (95% interval; zoomed)"]
    low, high = average.get_ylim()
    assert 0.9 < low < 0.916 and 0.920 < high < 0.93  # zoomed: the 0.002 gap is visible
    assert (0.919 - 0.917) / (high - low) > 0.2
    assert {"0.917", "0.919"} <= set(texts(average))


def test_plot_metrics_writes_a_png(tmp_path):
    plot_metrics(SCORES, tmp_path / "scores.png")
    assert (tmp_path / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
