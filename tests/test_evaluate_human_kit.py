"""The human kit without a browser: sampling, hidden systems, aggregation and Fleiss' kappa."""
import json

import pytest

from onmt_mirror.evaluate import human_kit
from onmt_mirror.evaluate.agreement import fleiss_kappa
from onmt_mirror.evaluate.inputs import InputError

SRC = ["hello . __eou__ hi , how are you ? __eou__ turn %d ?" % i for i in range(20)]
HYPS = {"sysgood": ["good answer %d ." % i for i in range(20)],
        "sysbad": ["bad answer %d ." % i for i in range(20)],
        "sysmeh": ["meh answer %d ." % i for i in range(20)]}
ANNOTATORS = ["annotator1", "annotator2", "annotator3"]


def test_fleiss_kappa_wikipedia_example():
    counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
              [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(counts) == pytest.approx(0.20993, abs=1e-5)


def test_fleiss_kappa_hand_computed():
    # two items all-win, one item 2 wins + 1 tie: P = 7/9, Pe = 65/81 -> kappa = -1/8
    assert fleiss_kappa([[3, 0, 0], [3, 0, 0], [2, 0, 1]]) == pytest.approx(-0.125)
    assert fleiss_kappa([[3, 0], [0, 3]]) == pytest.approx(1.0)
    assert fleiss_kappa([[3, 0], [3, 0]]) is None
    with pytest.raises(ValueError):
        fleiss_kappa([[3, 0], [2, 0]])


def test_make_kit_is_seeded_and_hides_systems():
    key, pages = human_kit.make_kit(SRC, HYPS, n=5, seed=4, annotators=ANNOTATORS)
    again, _ = human_kit.make_kit(SRC, HYPS, n=5, seed=4, annotators=ANNOTATORS)
    assert key == again
    assert len(key["items"]) == 10  # 5 examples x (sysgood vs sysbad, sysgood vs sysmeh)
    assert len({it["example"] for it in key["items"]}) == 5
    assert {it["other"] for it in key["items"]} == {"sysbad", "sysmeh"}
    sides = [key["annotators"][a] for a in ANNOTATORS]
    assert sides[0] != sides[1] or sides[1] != sides[2]  # own random sides per annotator
    for page in pages.values():
        assert "sys" not in page  # no system name anywhere in the page
        assert "http" not in page.replace("http-equiv", "")  # self-contained
        assert "turn 3?" in page and "hi, how are you?" in page  # shown detokenised


def choices_for(key, annotator, decide):
    """Export an annotator would make when `decide(example, other)` -> 'win' / 'loss' / 'tie'."""
    out = {}
    for item in human_kit.shown_items(key):
        verdict = decide(item["example"], item["other"])
        sides = key["annotators"][annotator][item["id"]]
        winner = {"win": item["system"], "loss": item["other"]}.get(verdict)
        out[item["id"]] = "tie" if winner is None else ("A" if sides["A"] == winner else "B")
    return out


def test_aggregate_maps_sides_back_to_systems():
    key, _ = human_kit.make_kit(SRC, HYPS, n=4, seed=0, annotators=ANNOTATORS)
    first = min(it["example"] for it in key["items"])
    exports = {
        "annotator1": choices_for(key, "annotator1", lambda ex, other: "win"),
        "annotator2": choices_for(key, "annotator2",
                                  lambda ex, other: "win" if other == "sysbad" else "loss"),
        "annotator3": choices_for(key, "annotator3", lambda ex, other: "tie" if ex == first else "win"),
    }
    bad, meh = human_kit.aggregate(key, exports)
    assert (bad["wins"], bad["losses"], bad["ties"], bad["n"]) == (11, 0, 1, 12)
    assert (meh["wins"], meh["losses"], meh["ties"]) == (7, 4, 1)
    # vs sysbad: 3 items all-win, 1 item 2 wins + 1 tie -> P = 5/6, Pe = (11/12)^2 + (1/12)^2
    pe = (121 + 1) / 144
    assert bad["kappa"] == pytest.approx((5 / 6 - pe) / (1 - pe))
    assert bad["annotators"] == 3


def test_incomplete_or_foreign_exports_are_rejected(tmp_path):
    key, _ = human_kit.make_kit(SRC, HYPS, n=2, seed=0, annotators=ANNOTATORS)
    path = tmp_path / "a1.json"
    choices = choices_for(key, "annotator1", lambda ex, other: "win")
    choices.pop(key["items"][0]["id"])
    path.write_text(json.dumps({"kit": key["kit"], "annotator": "annotator1", "choices": choices}))
    with pytest.raises(InputError, match=r"a1.json: 1 of 4 items unanswered"):
        human_kit.read_export(str(path), key)
    path.write_text(json.dumps({"kit": "other", "annotator": "annotator1", "choices": {}}))
    with pytest.raises(InputError, match="belongs to kit other"):
        human_kit.read_export(str(path), key)


def test_make_command_writes_pages_and_key(tmp_path, capsys):
    for name, lines in [("test.src", SRC)] + list(HYPS.items()):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    args = ["make", "--src", str(tmp_path / "test.src"), "--n", "3", "--out", str(tmp_path / "kit")]
    for name in HYPS:
        args += ["--hyp", "%s=%s" % (name, tmp_path / name)]
    assert human_kit.main(args) == 0
    assert sorted(p.name for p in (tmp_path / "kit").iterdir()) == [
        "annotator1.html", "annotator2.html", "annotator3.html", "key.json"]
    key = json.loads((tmp_path / "kit" / "key.json").read_text())
    assert len(key["items"]) == 6 and all(it["system"] == "sysgood" for it in key["items"])


def test_identical_pairs_are_not_shown_and_count_as_ties(tmp_path):
    """Examples 0-9: sysmeh says what sysgood says (spacing aside); sysbad never does."""
    hyps = dict(HYPS, sysmeh=["good  answer %d ." % i if i < 10 else "meh %d ." % i
                              for i in range(20)])
    key, pages = human_kit.make_kit(SRC, hyps, n=20, seed=0, annotators=ANNOTATORS)
    same = [it for it in key["items"] if it.get("identical")]
    assert len(key["items"]) == 40 and len(same) == 10
    assert {(it["other"], it["example"]) for it in same} == {("sysmeh", i) for i in range(10)}
    for annotator, page in pages.items():
        assert len(key["annotators"][annotator]) == 30
        assert not any(it["id"] in key["annotators"][annotator] for it in same)
        assert page.count('"id": "q') == 30
    exports = {a: choices_for(key, a, lambda ex, other: "win") for a in ANNOTATORS}
    path = tmp_path / "a1.json"
    path.write_text(json.dumps({"kit": key["kit"], "annotator": "annotator1",
                                "choices": exports["annotator1"]}))
    assert human_kit.read_export(str(path), key)[0] == "annotator1"
    bad, meh = human_kit.aggregate(key, exports)
    assert (bad["wins"], bad["losses"], bad["ties"], bad["n"]) == (60, 0, 0, 60)
    assert (meh["wins"], meh["losses"], meh["ties"], meh["n"]) == (30, 0, 30, 60)
