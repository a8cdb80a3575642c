"""Bad input, third round (issue 32): each case is one line naming what to change, or a
message the session survives; atomic writers honour the umask and clean up after a killed
run. Option values, readers and writers are checked in-process; the subprocesses (the
shipped chat model, no training) check what only a CLI shows: the one-line exit."""
import argparse
import io
import logging
import os
import subprocess
import sys

import onmt.inputters.inputter
import onmt.opts
import onmt.train_single
import pytest
from onmt.translate.translation_server import TranslationServer
from onmt.utils.parse import ArgumentParser

from cli_util import cli, error_line
from onmt_mirror import release
from onmt_mirror.chat import terminal
from onmt_mirror.chat.preprocess import RequestRefused, history_to_source
from onmt_mirror.checkpoint_io import AtomicTextOutput, atomic_save
from onmt_mirror.errors import MirrorError
from onmt_mirror.models.mirror import MirrorModel
from onmt_mirror.opts import MAX_NUM_Z, InRange
from onmt_mirror.registration import original
from onmt_mirror.registration.decoding import report_score
from onmt_mirror.registration.server import check_server_config
from onmt_mirror.transforms.mirror_triple import MirrorTripleTransform
from onmt_mirror.translate.multi_z import MultiZ

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAT_MODEL = os.path.join(REPO, "examples", "demo", "chat_model.pt")


def parser(opts=onmt.opts.train_opts):
    p = ArgumentParser()
    opts(p)
    return p


def translate_opt(*args):
    return parser(onmt.opts.translate_opts).parse_args(
        ["-model", "m.pt", "-src", "in.src"] + list(args))


# -- option values, checked as they are parsed -----------------------------------------

@pytest.mark.parametrize("args, line", [
    (["-mirror_kl_anneal_steps", "-5"], "-mirror_kl_anneal_steps -5: give a value in [0, inf)"),
    (["-mirror_bow_weight", "-1"], "-mirror_bow_weight -1.0: give a value in [0, inf)"),
    (["-mirror_free_bits", "-3"], "-mirror_free_bits -3.0: give a value in [0, inf)"),
    (["-mirror_kl_anneal_ratio", "0"], "-mirror_kl_anneal_ratio 0.0: give a value in (0, 1]"),
    (["-mirror_word_dropout", "1"], "-mirror_word_dropout 1.0: give a value in [0, 1)"),
    (["-mirror_kl_weight", "nan"], "-mirror_kl_weight nan: give a value in [0, inf)"),
    (["-mirror_z_size", "0"], "-mirror_z_size 0: give a value in [1, inf)"),
])
def test_mirror_numbers_out_of_range_are_one_line(args, line):
    with pytest.raises(MirrorError) as err:
        parser().parse_known_args(args)
    assert str(err.value) == line


def test_a_config_file_value_is_checked_too(tmp_path):
    (tmp_path / "c.yaml").write_text("mirror_context_turns: 0\n")
    with pytest.raises(MirrorError, match=r"^-mirror_context_turns 0: give a value in "
                       r"\[1, inf\)$"):
        parser().parse_known_args(["-config", str(tmp_path / "c.yaml")])
    opt, _ = parser().parse_known_args(["-data", "{}", "-src_vocab", "v.txt",
                                        "-mirror_kl_anneal_ratio", "1",
                                        "-mirror_word_dropout", "0"])
    assert (opt.mirror_kl_anneal_ratio, opt.mirror_word_dropout) == (1.0, 0.0)


def test_every_mirror_number_option_has_a_range():
    numbers = [a for a in parser()._actions
               if a.dest.startswith(("mirror_", "dc_")) and a.type in (int, float)]
    assert len(numbers) > 15
    assert [a.dest for a in numbers if not isinstance(a, InRange)] == []


def test_num_z_beam_size_and_n_best_are_bounded():
    with pytest.raises(MirrorError, match=r"^-mirror_num_z 100000: give a value in \[1, %d\]$"
                       % MAX_NUM_Z):
        translate_opt("-mirror_num_z", "100000")
    for name in ("beam_size", "n_best"):
        with pytest.raises(MirrorError) as err:
            ArgumentParser.validate_translate_opts(translate_opt("-" + name, "0"))
        assert str(err.value) == "-%s 0: give 1 or more" % name


def test_src_naming_a_directory_says_so(tmp_path):
    with pytest.raises(MirrorError) as err:
        ArgumentParser.validate_translate_opts(translate_opt("-src", str(tmp_path)))
    assert str(err.value) == "-src %s is a directory: give a file" % tmp_path
    with pytest.raises(MirrorError, match="is a directory: give a file"):
        ArgumentParser._validate_file(str(tmp_path), info="src vocab")


def test_rerank_with_one_candidate_is_refused_and_its_score_line_has_no_ppl():
    from conftest import tiny_config

    opt = argparse.Namespace(mirror_num_z=1, mirror_rerank=True, mirror_rerank_scores=None,
                             mirror_z=None)
    with pytest.raises(MirrorError, match="one candidate per input to choose from"):
        MultiZ.from_opt(MirrorModel(tiny_config()), None, opt, None, 1)
    reranking = argparse.Namespace(multi_z=argparse.Namespace(rerank=True))
    assert report_score(reranking, "PRED", -30.0, 3) == (
        "PRED SCORE: -10.0000 (-mirror_rerank's score(y), not a log-probability: no PPL) "
        "NB SENTENCES: 3")
    assert "PPL" in report_score(argparse.Namespace(multi_z=None), "PRED", -3.0, 3)


# -- -train_from a model of another type --------------------------------------------

@pytest.mark.parametrize("ours, theirs", [("mirror", "rnn"), ("rnn", "mirror"),
                                          ("hred", "mirror")])
def test_train_from_another_model_type_is_refused_naming_both(ours, theirs):
    opt = argparse.Namespace(encoder_type=ours, train_from="run/m_step_2.pt")
    with pytest.raises(MirrorError) as err:
        onmt.train_single._get_model_opts(opt, {"opt": argparse.Namespace(
            encoder_type=theirs)})
    assert str(err.value) == (
        "-train_from run/m_step_2.pt holds a model of encoder_type %s, but this recipe "
        "trains encoder_type %s: resume with the recipe that trained it, or train without "
        "-train_from" % (theirs, ours))


# -- vocabulary files ----------------------------------------------------------------

@pytest.mark.parametrize("content, line", [
    (b"", "vocabulary {} is empty: build it with onmt_build_vocab"),
    (b".\t11\ntea\n", "vocabulary {}, line 2: 'tea' has no count"),
    (b".\t11\ntea\tx\n", "vocabulary {}, line 2: the count of 'tea' is 'x', not a whole number"),
    (b".\t11\nt\xffa\t3\n", "vocabulary {}, line 2: invalid UTF-8 (byte 0xff at column 2)"),
    (b".\t11\n\n?\t2\n", "vocabulary {}, line 2 is empty"),
    (b".\ntea\t3\n", "vocabulary {}, line 2: 'tea\\t3' has a count but line 1 has none"),
])
def test_a_bad_vocabulary_line_is_named(tmp_path, content, line):
    path = tmp_path / "vocab.txt"
    path.write_bytes(content)
    with pytest.raises(MirrorError) as err:
        onmt.inputters.inputter._read_vocab_file(str(path), 1)
    assert str(err.value).startswith(line.format(path))


def test_a_good_vocabulary_reads_as_the_stock_reader_reads_it(tmp_path):
    stock = original(onmt.inputters.inputter, "_read_vocab_file")
    for name, content in [("counts", ".\t11\n?\t7\n｟mirror_query｠\t1\ntea\t2\n"),
                          ("tokens", ".\n?\ntea\n")]:
        path = str(tmp_path / name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(content)
        for min_count in (1, 2):
            assert (onmt.inputters.inputter._read_vocab_file(path, min_count)
                    == stock(path, min_count))


# -- typed text: control characters, invalid UTF-8 on stdin ---------------------------

def test_control_characters_in_typed_text_are_refused():
    opt = argparse.Namespace(mirror_turn_sep="__eou__", mirror_context_turns=1,
                             mirror_max_context_tokens=100, mirror_max_utterance_tokens=45,
                             mirror_bad_line="error")
    with pytest.raises(RequestRefused) as err:
        history_to_source("hi . __eou__ hello \x00 there", opt)
    assert str(err.value) == ("control character U+0000 at column 20: type the turn "
                              "without it")
    assert history_to_source("hi . __eou__ hello\tthere", opt).endswith("hello there")


class EchoChat(terminal.Chat):
    """Chat's turn handling without a model: every reply is "ok ."."""

    def __init__(self):
        self.opt = argparse.Namespace(mirror_context_turns=1)
        self.vocabulary, self.history = {"how", "are", "you", "?", "ok", "."}, []
        self.mean = self.sampled = None

    def decode(self, history, translator, z_mode):
        return ["ok ."]


def test_the_chat_reports_a_bad_line_and_goes_on():
    out, err = io.StringIO(), io.StringIO()
    lines = io.StringIO("how are you \udcff today ?\nhello \x00 there\nhow are you ?\n")
    terminal.run(EchoChat(), lines, out, err)
    assert err.getvalue().splitlines()[1:] == [
        "(not UTF-8: byte 0xff at column 13; this line is skipped)",
        "(refused: control character U+0000 at column 7: type the turn without it)"]
    assert out.getvalue() == "mirror: ok.\n"


# -- a shortened -src line ------------------------------------------------------------

def test_a_shortened_src_line_is_a_warning_naming_file_and_line(caplog):
    opts, _ = parser(onmt.opts.translate_opts).parse_known_args(
        ["-model", "m.pt", "-src", "long.src"])
    transform = MirrorTripleTransform(opts)
    long = ["hello", "__eou__"] + ["word"] * 50003
    with caplog.at_level(logging.WARNING, logger="onmt"):
        transform.apply({"src": long, "tgt": None, "cid": "infer", "cid_line_number": 6})
        transform.apply({"src": list(long), "tgt": None, "cid": "train",
                         "cid_line_number": 6})
    assert [r.getMessage() for r in caplog.records] == [
        "-src long.src, line 7: the query x has 50003 tokens, shortened to its first 45 "
        "(-mirror_max_utterance_tokens)"]


# -- onmt_server's --model_config ------------------------------------------------------

def test_server_config_missing_or_malformed_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"models": [\n')
    cases = [(tmp_path / "nope.json", "--model_config {}: file not found"),
             (tmp_path, "--model_config {}: is a directory"),
             (bad, "--model_config {}, line 2, column 1: not JSON (Expecting value)")]
    for path, line in cases:
        with pytest.raises(MirrorError) as err:
            check_server_config(str(path))
        assert str(err.value) == line.format(path)
    bad.write_text("[1]")
    with pytest.raises(MirrorError, match='a JSON object with a "models" list'):
        TranslationServer().start(str(bad))


# -- atomic writers: umask, leftovers of a killed write --------------------------------

@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_outputs_are_created_with_the_umask(tmp_path, umask_027):
    atomic_save({"w": 1}, str(tmp_path / "c.pt"))
    out = AtomicTextOutput(str(tmp_path / "pred.txt"))
    out.write("a\n")
    out.commit()
    assert [os.stat(tmp_path / n).st_mode & 0o777 for n in ("c.pt", "pred.txt")] == \
        [0o640, 0o640]


def test_the_next_write_removes_what_a_killed_one_left(tmp_path):
    left = [".pred.txt.k2j3h4g5.tmp", ".pred.txt.0123abcd.tmp"]
    kept = [".pred.txt.swp", ".other.txt.0123abcd.tmp", ".pred.txt.short.tmp"]
    for name in left + kept:
        (tmp_path / name).write_text("partial")
    out = AtomicTextOutput(str(tmp_path / "pred.txt"))
    out.write("a\n")
    assert out.commit() == sorted(left)
    assert sorted(os.listdir(tmp_path)) == sorted(kept + ["pred.txt"])
    (tmp_path / ".c.pt.q1w2e3r4.tmp").write_bytes(b"")
    assert atomic_save({"w": 1}, str(tmp_path / "c.pt")) == [".c.pt.q1w2e3r4.tmp"]


def test_release_checks_its_output_first_and_cleans_up(tmp_path, capsys):
    assert release.main(["--model", CHAT_MODEL, "--output", str(tmp_path / "no" / "r.pt")]) == 1
    assert release.main(["--model", CHAT_MODEL, "--output", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "onmt_mirror.release: error: --output %s: folder %s does not exist"
        % (tmp_path / "no" / "r.pt", tmp_path / "no"),
        "onmt_mirror.release: error: --output %s is a directory: give a file name" % tmp_path]
    assert os.listdir(tmp_path) == []
    (tmp_path / ".r.pt.abcd1234.tmp").write_bytes(b"")
    assert release.main(["--model", CHAT_MODEL, "--output", str(tmp_path / "r.pt")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "release: removed 1 temporary file(s) left by an interrupted release: "
        ".r.pt.abcd1234.tmp")
    assert os.listdir(tmp_path) == ["r.pt"]
    with pytest.raises(SystemExit):
        release.main(["-h"])
    usage = capsys.readouterr().out
    assert usage.startswith("usage: python -m onmt_mirror.release ")
    assert "\n\nMake a training checkpoint into a smaller one for decoding and chatting: " \
        in usage


# -- the CLIs: one line and exit 1, or a session that goes on ---------------------------

def test_onmt_train_with_a_bad_number_is_one_line(tmp_path):
    proc = cli(["onmt_train", "-mirror_kl_anneal_steps", "-5"],
               tmp_path, ok=False)
    assert error_line(proc) == ("onmt_mirror: error: -mirror_kl_anneal_steps -5: give a "
                                "value in [0, inf)")


def test_onmt_translate_warns_cleans_up_and_keeps_the_umask(tmp_path):
    (tmp_path / "in.src").write_text("hi . __eou__ %s\nhello . __eou__ how are you ?\n"
                                     % " ".join(["word"] * 50003))
    (tmp_path / ".out.txt.0123abcd.tmp").write_text("a partial translation")
    proc = cli(["python", "-c", "import os, sys; os.umask(0o022); sys.argv[0] = "
                "'onmt_translate'; from onmt.bin.translate import main; main()",
                "-model", CHAT_MODEL, "-src", "in.src", "-output", "out.txt",
                "-max_length", "5"], tmp_path)
    assert ("-src in.src, line 1: the query x has 50003 tokens, shortened to its first 45 "
            "(-mirror_max_utterance_tokens)") in proc.stderr
    assert ("Removed 1 temporary file(s) left by an interrupted onmt_translate beside "
            "out.txt: .out.txt.0123abcd.tmp") in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["in.src", "out.txt"]
    assert os.stat(tmp_path / "out.txt").st_mode & 0o777 == 0o644
    assert len((tmp_path / "out.txt").read_text().splitlines()) == 2


def test_the_chat_on_invalid_utf8_stdin_goes_on(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "onmt_mirror.chat", "--cli", "-model", CHAT_MODEL,
         "-max_length", "5"], input=b"how are you \xff\xfe today ?\nhow are you ?\n",
        capture_output=True, timeout=300, cwd=tmp_path)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert "(not UTF-8: byte 0xff at column 13; this line is skipped)" in err
    assert len(proc.stdout.decode().splitlines()) == 1
