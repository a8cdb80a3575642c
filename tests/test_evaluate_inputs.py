"""Bad input gives one clear line and exit status 2, never a traceback or misaligned scores."""
import os
import subprocess
import sys

import pytest

from onmt_mirror.evaluate.inputs import InputError, parse_named, read_lines, read_parallel, split_src

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, text):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return str(path)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "onmt_mirror.evaluate", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_line_ends_and_final_newline(tmp_path):
    assert read_lines(write(tmp_path / "a", "x\r\ny\n\nz")) == ["x", "y", "", "z"]
    assert read_lines(write(tmp_path / "b", "")) == []


def test_mismatched_line_counts_name_files_and_counts(tmp_path):
    ref = write(tmp_path / "test.tgt", "a\nb\nc\n")
    hyp = write(tmp_path / "pred.txt", "a\nb\n")
    with pytest.raises(InputError, match=r"test.tgt has 3 lines, .*pred.txt has 2 lines"):
        read_parallel({"ref": ref, "hyp": hyp})
    done = run_cli("--ref", ref, "--hyp", "mirror=" + hyp, "--json", str(tmp_path / "s.json"))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "test.tgt has 3 lines" in done.stderr and "pred.txt has 2 lines" in done.stderr
    assert not (tmp_path / "s.json").exists()


def test_invalid_utf8_names_file_line_and_byte(tmp_path):
    ref = write(tmp_path / "test.tgt", "a\nb\nc\n")
    hyp = write(tmp_path / "pred.txt", b"ok\nca\xffe\nx\n")
    done = run_cli("--ref", ref, "--hyp", "mirror=" + hyp, "--json", str(tmp_path / "s.json"))
    assert done.returncode == 1
    assert done.stderr.strip().endswith("pred.txt line 2: invalid UTF-8 (byte 0xff at column 3)")
    assert "Traceback" not in done.stderr


def test_missing_file_and_bad_names(tmp_path):
    with pytest.raises(InputError, match=r"cannot read .*nope.txt"):
        read_lines(str(tmp_path / "nope.txt"))
    with pytest.raises(InputError, match="NAME=FILE"):
        parse_named(["pred.txt"])
    with pytest.raises(InputError, match="given twice"):
        parse_named(["a=x", "a=y"])
    assert parse_named(["mirror=p=1.txt"]) == [("mirror", "p=1.txt")]


def test_split_src_last_turn_is_the_query():
    assert split_src("hi . __eou__ hello ! __eou__ how are you ?") == (["hi .", "hello !"], "how are you ?")
    assert split_src("how are you ?") == ([], "how are you ?")
