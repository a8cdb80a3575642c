"""The MMI-bidi re-ranker on hand-made n-best lists: formula, ties, files, grid, CLI."""
import json

import pytest

from onmt_mirror.rerank import nbest as nb
from onmt_mirror.rerank.__main__ import main


def row(src_id, rank, fwd, bwd, cand):
    return {"src_id": src_id, "rank": rank, "length": len(cand.split()), "fwd": fwd,
            "bwd": bwd, "candidate": cand}


# source 0: the forward model prefers a short generic reply; the backward model does not
GROUPS = [
    [row(0, 0, -2.0, -10.0, "i don't know ."),                   # 4 tokens
     row(0, 1, -3.0, -4.0, "the station is near the bank ."),    # 7 tokens
     row(0, 2, -3.6, -2.0, "go left .")],                         # 3 tokens
    [row(1, 0, -1.0, -5.0, "yes ."),
     row(1, 1, -1.5, -5.0, "yes , i do .")],
]


@pytest.mark.parametrize("lam,gamma,expected", [
    (0.0, 0.0, [0, 0]),      # forward model only
    (0.5, 0.0, [2, 0]),      # -7.0, -5.0, -4.6 | -3.5, -4.0
    (0.2, 0.0, [1, 0]),      # -4.0, -3.8, -4.0 | -2.0, -2.5
    (0.5, 0.2, [1, 1]),      # -6.2, -3.6, -4.0 | -3.1, -3.0
    (0.0, -2.0, [2, 0]),     # a length penalty: -10, -17, -9.6 | -5, -11.5
])
def test_reorders_exactly_as_the_formula(lam, gamma, expected):
    assert nb.choose(GROUPS, lam, gamma) == expected
    for cands, pick in zip(GROUPS, expected):
        scores = [c["fwd"] + lam * c["bwd"] + gamma * c["length"] for c in cands]
        assert scores[pick] == max(scores)
    assert nb.rerank(GROUPS, lam, gamma) == [GROUPS[0][expected[0]]["candidate"],
                                             GROUPS[1][expected[1]]["candidate"]]


def test_a_tie_keeps_the_forward_order():
    tie = [[row(0, 0, -2.0, -2.0, "a b"), row(0, 1, -1.0, -4.0, "c d")]]
    assert nb.choose(tie, 0.5, 0.0) == [0]  # both -3.0


def test_nbest_file_with_and_without_scores(tmp_path):
    path = tmp_path / "n.txt"
    path.write_text("a b\nc\nd e f\ng\n")
    assert nb.read_nbest(path, 2) == [[("a b", None), ("c", None)],
                                      [("d e f", None), ("g", None)]]
    path.write_text("a b\t-1.5\nc\t-2\n")
    assert nb.read_nbest(path, 1, n_best=2) == [[("a b", -1.5), ("c", -2.0)]]
    with pytest.raises(ValueError, match="not a multiple"):
        nb.read_nbest(path, 3)
    with pytest.raises(ValueError, match="expected -n_best 3"):
        nb.read_nbest(path, 1, n_best=3)


def test_score_file_round_trip(tmp_path):
    rows = [r for g in GROUPS for r in g] + [row(2, 0, -1.25, -0.5, 'odd \\ "text"')]
    nb.write_scores(tmp_path / "s.tsv", rows)
    back = nb.read_scores(tmp_path / "s.tsv")
    assert [r for g in back for r in g] == rows


def test_parse_grid():
    assert nb.parse_grid("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert nb.parse_grid("-1:1:1") == [-1.0, 0.0, 1.0]
    assert nb.parse_grid("0.1, 2") == [0.1, 2.0]


def test_grid_search_finds_the_setting_that_matches_the_references():
    refs = ["the station is near the bank .", "yes , i do ."]
    best, table = nb.grid_search(GROUPS, refs, [0.0, 0.5], [0.0, 0.2], "bleu2")
    assert (best["lambda"], best["gamma"]) == (0.5, 0.2)  # the only (1, 1) choice
    assert best["bleu2"] == pytest.approx(1.0) and best["changed"] == 2
    assert len(table) == 4
    # references nobody reproduces: every setting ties, the smallest one wins
    best, _ = nb.grid_search(GROUPS, ["x y z", "w"], [0.0, 0.5], [0.0, 0.2], "bleu4")
    assert (best["lambda"], best["gamma"]) == (0.0, 0.0)


def test_tune_and_apply_commands(tmp_path, capsys):
    nb.write_scores(tmp_path / "valid.tsv", [r for g in GROUPS for r in g])
    (tmp_path / "valid.tgt").write_text("the station is near the bank .\nyes , i do .\n")
    main(["tune", "--scores", str(tmp_path / "valid.tsv"), "--ref",
          str(tmp_path / "valid.tgt"), "--lambdas", "0,0.5", "--gammas", "0,0.2",
          "--objective", "bleu2", "--output", str(tmp_path / "mmi.json")])
    params = json.loads((tmp_path / "mmi.json").read_text())
    assert (params["lambda"], params["gamma"], params["changed"]) == (0.5, 0.2, 2)
    assert params["forward_only_value"] < params["value"]
    main(["apply", "--scores", str(tmp_path / "valid.tsv"), "--params",
          str(tmp_path / "mmi.json"), "--output", str(tmp_path / "out.txt")])
    assert (tmp_path / "out.txt").read_text() == (tmp_path / "valid.tgt").read_text()
    main(["apply", "--scores", str(tmp_path / "valid.tsv"), "--lambda", "0", "--gamma",
          "0", "--output", str(tmp_path / "fwd.txt")])
    assert (tmp_path / "fwd.txt").read_text() == "i don't know .\nyes .\n"
    assert "lambda 0.5 gamma 0.2" in capsys.readouterr().out
