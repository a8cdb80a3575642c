"""The automatic judge, its BLEU agreement, the Table 1 rows and their bootstrap interval."""
import json

import numpy as np
import pytest

from onmt_mirror.evaluate import pairwise
from onmt_mirror.evaluate.table1 import markdown, table1_row


def test_judge_margin_makes_ties():
    judged = pairwise.judge([0.9, 0.5, 0.52, 0.3], [0.2, 0.8, 0.5, 0.36], margin=0.05)
    assert judged.tolist() == [1, -1, 0, -1]


def test_bleu_preference_and_agreement():
    refs = ["i live in london .", "it is five .", "ok ."]
    a = ["i live in paris .", "no idea", "ok ."]
    b = ["what ?", "it is five .", "ok ."]
    preferred = pairwise.bleu_preference(refs, a, b)
    assert preferred.tolist() == [1, -1, 0]
    agree = pairwise.agreement([1, 1, 0], preferred)
    assert agree == {"agreement_bleu": pytest.approx(2 / 3), "agreement_bleu_decisive": 0.5, "n_decisive": 2}


def test_compare_with_a_stand_in_encoder():
    table = {"ref one": [1, 0], "ref two": [0, 1], "close": [0.99, 0.141], "far": [0, 1], "mid": [0.7, 0.714]}

    def encode(texts):
        v = np.array([table[t] for t in texts], dtype=float)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    rows = pairwise.compare(encode, ["ref one", "ref two"], {"sys": ["close", "mid"], "base": ["far", "mid"]})
    (row,) = rows
    assert (row["system"], row["other"], row["wins"], row["losses"], row["ties"]) == ("sys", "base", 1, 0, 1)


def test_each_distinct_sentence_is_encoded_once_under_a_progress_bar(monkeypatch):
    """The references are shared by every system: 3 refs + 4 new hypotheses = 7 texts."""
    encoded, bars = [], []

    def encode(texts):
        encoded.extend(texts)
        return np.eye(8)[[len(t) % 8 for t in texts]]

    class Bar:
        def __init__(self, iterable=None, total=None, **kwargs):
            self.iterable, self.total, self.done = iterable, total, 0
            bars.append(self)

        def __iter__(self):
            return iter(self.iterable)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            self.done += n

    monkeypatch.setattr(pairwise, "progress", Bar)
    refs = ["r one", "r two", "r three"]
    hyps = {"a": ["x", "r two", "y"], "b": ["x", "z", "w"], "c": ["r one", "x", "x"]}
    rows = pairwise.compare(encode, refs, hyps, reps=10)
    assert sorted(encoded) == sorted(set(refs) | {"x", "y", "z", "w"})
    assert (bars[0].total, bars[0].done) == (7, 7)
    assert [r["other"] for r in rows] == ["b", "c"] and list(bars[1].iterable) == ["b", "c"]


def test_table1_counts_and_bootstrap():
    row = table1_row("a", "b", [1] * 6 + [-1] * 3 + [0] * 1, reps=2000, seed=3)
    assert (row["wins"], row["losses"], row["ties"], row["n"]) == (6, 3, 1, 10)
    low, high = row["wins_ci95"]
    assert low < 0.6 < high and 0.2 <= low and high <= 0.95
    assert table1_row("a", "b", [1] * 5)["wins_ci95"] == [1.0, 1.0]
    again = table1_row("a", "b", [1] * 6 + [-1] * 3 + [0] * 1, reps=2000, seed=3)
    assert again == row  # seeded
    judges = table1_row("a", "b", [[1, 1, 0], [-1, 1, 1]])
    assert (judges["n"], judges["wins"], judges["losses"], judges["ties"]) == (6, 4, 1, 1)
    line = markdown([row], extra=[("kappa", "κ")]).splitlines()[2]
    assert line.startswith("| a vs b | 60.0 [") and line.endswith("| 10 | n/a |")


@pytest.fixture(scope="module")
def minilm():
    return pairwise.load_encoder()


def test_packaged_minilm_prefers_the_paraphrase(minilm):
    e = minilm(["i live in london .", "i live in paris .", "my favourite food is pizza ."])
    assert e.shape == (3, 384)
    assert np.linalg.norm(e, axis=1) == pytest.approx(1.0, abs=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


def test_pairwise_command(tmp_path, monkeypatch, minilm, capsys):
    monkeypatch.setattr(pairwise, "load_encoder", lambda: minilm)
    ref = ["i live in london .", "it is five o clock .", "i am fine , thanks ."]
    hyps = {"mirror": ["i live in paris .", "it is five .", "i don't know ."],
            "seq2seq": ["i don't know .", "i don't know .", "i don't know ."]}
    (tmp_path / "ref").write_text("\n".join(ref) + "\n")
    args = ["--ref", str(tmp_path / "ref")]
    for name, lines in hyps.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        args += ["--hyp", "%s=%s" % (name, tmp_path / name)]
    out = tmp_path / "pw"
    assert pairwise.main(args + ["--json", "%s.json" % out, "--plot", "%s.png" % out]) == 0
    (row,) = json.loads((tmp_path / "pw.json").read_text())["rows"]
    assert (row["wins"], row["losses"], row["ties"]) == (2, 0, 1)  # identical 3rd responses tie
    assert row["agreement_bleu"] == 1.0
    assert "| mirror vs seq2seq | 66.7 [" in capsys.readouterr().out
    assert (tmp_path / "pw.png").read_bytes()[:4] == b"\x89PNG"
