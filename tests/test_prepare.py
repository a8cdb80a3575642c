"""Tests of onmt_mirror.prepare: window counts on the shared DailyDialog copy, window contents,
options, every bad-input case, MovieTriples, the manifest, atomic output, the demo slice."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onmt_mirror.prepare.__main__ import main
from onmt_mirror.prepare.corpus import write_files

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ONMT_MIRROR_SHARED", REPO.parent / "shared"))
DAILYDIALOG = SHARED / "datasets" / "dailydialog"
DEMO = REPO / "examples" / "demo" / "data"
OUTPUT_FILES = [f"{s}.{side}" for s in ("train", "valid", "test") for side in ("src", "tgt")]
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"no shared folder at {SHARED}"
)

GOOD = b"A1 __eou__ B1 __eou__ A2 __eou__ B2 __eou__\n"


def dailydialog_dir(root, train=GOOD, valid=GOOD, test=GOOD):
    root.mkdir(parents=True, exist_ok=True)
    for name, content in (("train", train), ("validation", valid), ("test", test)):
        (root / f"dialogues_{name}.txt").write_bytes(content)
    return root


def run(tmp_path, *args, dataset="dailydialog", input_dir=None):
    out = tmp_path / "out"
    rc = main([dataset, "--input", str(input_dir or tmp_path / "in"), "--output", str(out), *args])
    return rc, out


def lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def manifest(out):
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def bad_line_message(path, lineno, reason):
    return (f"onmt_mirror.prepare dailydialog: error: {path} line {lineno}: {reason}; "
            "1 bad line(s) in total (train 1); fix the input or pass --on-bad-line skip")


@needs_shared
def test_shared_dailydialog_counts(tmp_path, capsys):
    rc, out = run(tmp_path, input_dir=DAILYDIALOG)
    assert rc == 0
    m = manifest(out)
    assert (m["train"], m["valid"], m["test"]) == (64935, 6069, 5740)
    assert m["skipped"]["short_dialogues"] == {"train": 483, "valid": 40, "test": 42}
    assert m["dialogues"] == {"train": 11118, "valid": 1000, "test": 1000}
    assert m["duplicates"] == {"train": 5009, "valid": 52, "test": 35}
    assert m["overlap_with_train"] == {"valid": 766, "test": 770}
    assert m["sources"]["train"]["sha256"] == (
        "71633bd5fdb0b09dd82215b131b56432cf7329a0fe50bc8adec168713d350d1a")
    for split in ("train", "valid", "test"):
        assert len(lines(out / f"{split}.src")) == len(lines(out / f"{split}.tgt")) == m[split]
    printed = capsys.readouterr().out
    assert "dailydialog train: 64935 windows from 11118 dialogues (483 shorter than 3 turns" in printed
    assert "dailydialog valid: 6069 windows" in printed and "dailydialog test: 5740 windows" in printed


@needs_shared
def test_shared_dailydialog_dedup(tmp_path):
    rc, out = run(tmp_path, "--dedup", input_dir=DAILYDIALOG)
    assert rc == 0
    m = manifest(out)
    assert (m["train"], m["valid"], m["test"]) == (64935 - 5009, 6069 - 52, 5740 - 35)
    assert m["skipped"]["duplicates_removed"] == {"train": 5009, "valid": 52, "test": 35}


def test_window_contents(tmp_path, capsys):
    train = (b"\xef\xbb\xbf  A1   said\tthis __eou__ B1 __eou__ A2 __eou__ B2 __eou__ \r\n"
             b"hi __eou__ hello __eou__\n"
             b"C1 __eou__ D1 __eou__ C2 __eou__\n")
    dailydialog_dir(tmp_path / "in", train=train)
    rc, out = run(tmp_path)
    assert rc == 0
    assert lines(out / "train.src") == ["A1 said this __eou__ B1", "B1 __eou__ A2", "C1 __eou__ D1"]
    assert lines(out / "train.tgt") == ["A2", "B2", "C2"]
    m = manifest(out)
    assert m["train"] == 3 and m["skipped"]["short_dialogues"]["train"] == 1
    assert m["dialogues"]["train"] == 3
    assert "dailydialog train: 3 windows from 3 dialogues (1 shorter than 3 turns" in capsys.readouterr().out


def test_official_zip_layout(tmp_path):
    root = tmp_path / "in"
    for folder, name in (("train", "train"), ("validation", "validation"), ("test", "test")):
        (root / folder).mkdir(parents=True)
        (root / folder / f"dialogues_{name}.txt").write_bytes(GOOD)
    rc, out = run(tmp_path)
    assert rc == 0 and manifest(out)["sources"]["valid"]["file"] == "validation/dialogues_validation.txt"


def test_context_turns(tmp_path):
    dailydialog_dir(tmp_path / "in", train=b"T1 __eou__ T2 __eou__ T3 __eou__ T4 __eou__ T5 __eou__\n")
    rc, out = run(tmp_path, "--context-turns", "2")
    assert rc == 0
    assert lines(out / "train.src") == ["T1 __eou__ T2", "T1 __eou__ T2 __eou__ T3",
                                        "T2 __eou__ T3 __eou__ T4"]
    assert lines(out / "train.tgt") == ["T3", "T4", "T5"]
    assert manifest(out)["options"]["context_turns"] == 2


def test_context_turns_must_be_positive(tmp_path, capsys):
    dailydialog_dir(tmp_path / "in")
    with pytest.raises(SystemExit):
        run(tmp_path, "--context-turns", "0")
    assert "must be 1 or more" in capsys.readouterr().err


def test_lowercase(tmp_path):
    dailydialog_dir(tmp_path / "in", train=b"Hello THERE __eou__ How ARE you __eou__ Fine __eou__\n")
    rc, out = run(tmp_path, "--lowercase")
    assert rc == 0
    assert lines(out / "train.src") == ["hello there __eou__ how are you"]
    assert lines(out / "train.tgt") == ["fine"]


def test_dedup_counts(tmp_path):
    # Three exact duplicates: the repeated dialogue's 2 windows, and "B1 A2 -> B2" once more.
    train = GOOD + GOOD + b"X __eou__ B1 __eou__ A2 __eou__ B2 __eou__\n"
    dailydialog_dir(tmp_path / "in", train=train)
    rc, out = run(tmp_path)
    assert rc == 0
    m = manifest(out)
    assert m["train"] == 6 and m["duplicates"]["train"] == 3
    assert m["skipped"]["duplicates_removed"]["train"] == 0
    assert m["overlap_with_train"] == {"valid": 2, "test": 2}

    rc, out = run(tmp_path, "--dedup")
    m = manifest(out)
    assert m["train"] == 3 and m["duplicates"]["train"] == 3
    assert m["skipped"]["duplicates_removed"]["train"] == 3
    assert lines(out / "train.src") == ["A1 __eou__ B1", "B1 __eou__ A2", "X __eou__ B1"]
    assert lines(out / "train.tgt") == ["A2", "B2", "A2"]


BAD_LINES = [
    (b"A __eou__ B \xff __eou__ C __eou__\n", "not UTF-8 (byte 0xff at column 13)"),
    (b"A B C with no separator\n", "no __eou__ separator"),
    (b"A __eou__  __eou__ C __eou__\n", "empty turn 2"),
    (b"A __eou__ B __eou__ C\n", "does not end with __eou__ (truncated line?)"),
    (b"   \n", "empty line"),
]


@pytest.mark.parametrize("bad,reason", BAD_LINES)
def test_bad_line_fails_with_file_and_line(tmp_path, capsys, bad, reason):
    root = dailydialog_dir(tmp_path / "in", train=GOOD + bad + GOOD)
    rc, out = run(tmp_path)
    assert rc == 1
    err = capsys.readouterr().err
    assert err == bad_line_message(root / "dialogues_train.txt", 2, reason) + "\n"
    assert not out.exists()


@pytest.mark.parametrize("bad,reason", BAD_LINES)
def test_bad_line_skipped_with_count(tmp_path, capsys, bad, reason):
    root = dailydialog_dir(tmp_path / "in", train=GOOD + bad + bad + GOOD)
    rc, out = run(tmp_path, "--on-bad-line", "skip")
    assert rc == 0
    m = manifest(out)
    assert m["train"] == 4 and m["skipped"]["bad_lines"] == {"train": 2, "valid": 0, "test": 0}
    first = f"{root / 'dialogues_train.txt'} line 2: {reason}"
    assert m["bad_line_examples"]["train"] == [first, f"{root / 'dialogues_train.txt'} line 3: {reason}"]
    assert capsys.readouterr().err == f"warning: skipped 2 bad line(s) in train, first: {first}\n"


def test_bad_lines_counted_over_all_splits(tmp_path, capsys):
    root = dailydialog_dir(tmp_path / "in", train=GOOD + b"x\n" + b"y\n", test=b"\n" + GOOD)
    rc, _ = run(tmp_path)
    assert rc == 1
    assert capsys.readouterr().err == (
        f"onmt_mirror.prepare dailydialog: error: {root / 'dialogues_train.txt'} line 2: "
        "no __eou__ separator; 3 bad line(s) in total (train 2, test 1); "
        "fix the input or pass --on-bad-line skip\n")


def test_empty_and_missing_split_files(tmp_path, capsys):
    root = dailydialog_dir(tmp_path / "in", valid=b"")
    assert run(tmp_path)[0] == 1
    assert capsys.readouterr().err == (
        f"onmt_mirror.prepare dailydialog: error: {root / 'dialogues_validation.txt'}: "
        "empty valid split file\n")
    (root / "dialogues_test.txt").unlink()
    (root / "dialogues_validation.txt").write_bytes(GOOD)
    assert run(tmp_path)[0] == 1
    assert capsys.readouterr().err == (
        f"onmt_mirror.prepare dailydialog: error: {root}: no test split file "
        "(expected dialogues_test.txt or test/dialogues_test.txt)\n")


def test_split_without_windows_fails(tmp_path, capsys):
    root = dailydialog_dir(tmp_path / "in", test=b"hi __eou__ hello __eou__\n")
    assert run(tmp_path)[0] == 1
    assert capsys.readouterr().err == (
        f"onmt_mirror.prepare dailydialog: error: {root / 'dialogues_test.txt'}: "
        "no windows (no dialogues with 3 or more turns)\n")


def test_cli_failure_is_one_line_without_traceback(tmp_path):
    root = dailydialog_dir(tmp_path / "in", train=GOOD + b"\xc3\x28 __eou__\n")
    result = subprocess.run(
        [sys.executable, "-m", "onmt_mirror.prepare", "dailydialog", "--input", str(root),
         "--output", str(tmp_path / "out")], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert f"{root / 'dialogues_train.txt'} line 2: not UTF-8 (byte 0xc3 at column 1)" in result.stderr


def test_cli_imports_standard_library_only():
    """Preparing data must not wait for torch or OpenNMT-py to import."""
    code = ("import sys, onmt_mirror; before = set(sys.modules); "
            "import onmt_mirror.prepare.__main__; "
            "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
            "print(sorted(new - set(sys.stdlib_module_names) - {'onmt_mirror'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_failure_leaves_previous_output_untouched(tmp_path):
    dailydialog_dir(tmp_path / "in")
    rc, out = run(tmp_path)
    assert rc == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "in" / "dialogues_test.txt").write_bytes(GOOD + b"broken\n")
    (tmp_path / "in" / "dialogues_train.txt").write_bytes(GOOD + GOOD)
    rc, out = run(tmp_path)
    assert rc == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_write_failure_leaves_no_partial_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.src").write_text("old\n")

    def broken():
        yield "first line"
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_files(out, {"train.src": ["new"], "train.tgt": broken(), "manifest.json": ["{}"]})
    assert sorted(p.name for p in out.iterdir()) == ["train.src"]
    assert (out / "train.src").read_text() == "old\n"


def test_manifest_contents(tmp_path):
    root = dailydialog_dir(tmp_path / "in")
    rc, out = run(tmp_path, "--lowercase", "--dedup", "--on-bad-line", "skip")
    assert rc == 0
    m = manifest(out)
    assert m["dataset"] == "dailydialog"
    assert (m["train"], m["valid"], m["test"]) == (2, 2, 2)
    assert set(m["skipped"]) == {"short_dialogues", "bad_lines", "duplicates_removed"}
    assert m["options"] == {"context_turns": 1, "lowercase": True, "dedup": True,
                            "on_bad_line": "skip"}
    assert m["sources"]["test"] == {"file": "dialogues_test.txt",
                                    "sha256": hashlib.sha256(GOOD).hexdigest()}
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES + ["manifest.json"])
    assert (root / "dialogues_train.txt").read_bytes() == GOOD  # input untouched


def movietriples_dir(root, names=("Training", "Validation", "Test"), suffix="_Shuffled_Dataset.txt"):
    root.mkdir(parents=True, exist_ok=True)
    triples = ("<person> , where are you going ?\ti 'm going to <number> street .\twhy ?\n"
               "hello .\thi .\thow are you ?\n")
    for name in names:
        (root / f"{name}{suffix}").write_text(triples, encoding="utf-8")
    return root


@pytest.mark.parametrize("names,suffix", [(("Training", "Validation", "Test"), "_Shuffled_Dataset.txt"),
                                          (("train", "valid", "test"), ".txt")])
def test_movietriples(tmp_path, capsys, names, suffix):
    movietriples_dir(tmp_path / "in", names, suffix)
    rc, out = run(tmp_path, dataset="movietriples")
    assert rc == 0
    for split in ("train", "valid", "test"):
        assert lines(out / f"{split}.src") == [
            "<person> , where are you going ? __eou__ i 'm going to <number> street .",
            "hello . __eou__ hi ."]
        assert lines(out / f"{split}.tgt") == ["why ?", "how are you ?"]
    m = manifest(out)
    assert m["dataset"] == "movietriples" and m["triples"] == {"train": 2, "valid": 2, "test": 2}
    assert "movietriples train: 2 windows from 2 triples" in capsys.readouterr().out


def test_movietriples_bad_lines(tmp_path, capsys):
    root = movietriples_dir(tmp_path / "in")
    train = root / "Training_Shuffled_Dataset.txt"
    train.write_text("a\tb\tc\nonly\ttwo\na\t \tc\na\tb __eou__ b\tc\n", encoding="utf-8")
    assert run(tmp_path, dataset="movietriples")[0] == 1
    assert capsys.readouterr().err == (
        f"onmt_mirror.prepare movietriples: error: {train} line 2: expected 3 tab-separated "
        "utterances, found 2; 3 bad line(s) in total (train 3); "
        "fix the input or pass --on-bad-line skip\n")
    rc, out = run(tmp_path, "--on-bad-line", "skip", dataset="movietriples")
    assert rc == 0
    assert manifest(out)["bad_line_examples"]["train"] == [
        f"{train} line 2: expected 3 tab-separated utterances, found 2",
        f"{train} line 3: empty utterance 2",
        f"{train} line 4: utterance 2 contains __eou__"]


def test_movietriples_rejects_ambiguous_files_and_more_context(tmp_path, capsys):
    root = movietriples_dir(tmp_path / "in")
    assert run(tmp_path, "--context-turns", "2", dataset="movietriples")[0] == 1
    assert capsys.readouterr().err == (
        "onmt_mirror.prepare movietriples: error: movietriples has 1 context turn(s) per "
        "example; --context-turns 2 is not possible\n")
    movietriples_dir(root, ("train",), ".txt")
    assert run(tmp_path, dataset="movietriples")[0] == 1
    assert capsys.readouterr().err == (
        f"onmt_mirror.prepare movietriples: error: {root}: two train split files "
        "(Training_Shuffled_Dataset.txt, train.txt)\n")


def test_demo_corpus_is_what_the_command_writes(tmp_path):
    rc, out = run(tmp_path, input_dir=DEMO / "raw")
    assert rc == 0
    for name in OUTPUT_FILES + ["manifest.json"]:
        assert (out / name).read_bytes() == (DEMO / name).read_bytes(), name
    assert sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file()) < 1_000_000


@needs_shared
def test_demo_slice_is_the_start_of_the_shared_files():
    for name, count in (("train", 300), ("validation", 40), ("test", 40)):
        raw = (DEMO / "raw" / f"dialogues_{name}.txt").read_bytes()
        shared = (DAILYDIALOG / f"dialogues_{name}.txt").read_bytes()
        assert raw.count(b"\n") == count and shared.startswith(raw)
