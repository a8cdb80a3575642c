"""Bad input through the stock CLIs: one line naming the file (and line), exit 1, no
traceback, and nothing half-written (no vocabulary, no checkpoint, -output untouched).

(OpenNMT-py of another version: tests/test_registration.py.)
"""
import pytest

from cli_util import cli, error_line, mirror_config, stock_config, write_corpus

E = "onmt_mirror: error: "
TURNS = "turns are separated by '__eou__'"
ONE_TURN = "only one turn, so no context and query: " + TURNS
CASES = {  # name: (bad.src, bad.tgt, message)
    "no_query": (b"a b __eou__ c d\nlonely line\n", "x\ny\n",
                 "corpus 'train', file bad.src, line 2: " + ONE_TURN),
    "empty_turn": (b"a b __eou__ c d\na __eou__ __eou__ b\n", "x\ny\n",
                   "corpus 'train', file bad.src, line 2: empty turn (%s)" % TURNS),
    "trailing_empty_turn": (b"a b __eou__ c d\na __eou__\n", "x\ny\n",
                            "corpus 'train', file bad.src, line 2: empty turn (%s)" % TURNS),
    "whitespace_line": (b"a b __eou__ c d\n \t  \n", "x\ny\n",
                        "corpus 'train', file bad.src, line 2: " + ONE_TURN),
    "empty_response": (b"a b __eou__ c d\ne __eou__ f\n", "x\n\n",
                       "corpus 'train', file bad.src, line 2: empty response in bad.tgt"),
    "src_longer": (b"a __eou__ b\nc __eou__ d\n", "x\n",
                   "corpus 'train': bad.src has more lines than bad.tgt (2+ vs 1)"),
    "tgt_longer": (b"a __eou__ b\nc __eou__ d\n", "x\ny\nz\n",
                   "corpus 'train': bad.src has 2 lines but bad.tgt has 3"),
    "invalid_utf8": (b"a __eou__ b\nc __eou__ \xff d\n", "x\ny\n",
                     "corpus 'train', file bad.src, line 2: invalid UTF-8 (byte 0xff at "
                     "offset 10)"),
}
BAD_DATA = "{train: {path_src: bad.src, path_tgt: bad.tgt, transforms: [mirror_triple]}}"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A tiny Mirror checkpoint and a stock one, each with its vocabulary."""
    tmp = tmp_path_factory.mktemp("bad_input")
    write_corpus(tmp)
    mirror_config(tmp, train_steps=2, save_checkpoint_steps=2, valid_steps=2)
    stock_config(tmp, train_steps=1, save_checkpoint_steps=1, valid_steps=1)
    for cfg in ("mirror.yaml", "stock.yaml"):
        cli(["onmt_build_vocab", "-config", cfg, "-n_sample", "-1"], tmp)
        cli(["onmt_train", "-config", cfg], tmp)
    return tmp


def write_bad(work, name):
    src, tgt, message = CASES[name]
    (work / "bad.src").write_bytes(src)
    (work / "bad.tgt").write_text(tgt)
    return E + message


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_corpus_onmt_build_vocab(work, name):
    message = write_bad(work, name)
    out = cli(["onmt_build_vocab", "-config", "mirror.yaml", "-n_sample", "-1", "-data",
               BAD_DATA, "-src_vocab", "run/bad.vocab"], work, ok=False)
    assert error_line(out) == message
    assert not (work / "run/bad.vocab").exists()


@pytest.mark.parametrize("name", ["no_query", "src_longer", "invalid_utf8"])
def test_bad_corpus_onmt_train(work, name):
    message = write_bad(work, name)
    out = cli(["onmt_train", "-config", "mirror.yaml", "-data", BAD_DATA, "-save_model",
               "run/bad"], work, ok=False)
    assert error_line(out) == message
    assert not list(work.glob("run/bad*.pt"))


def test_bad_src_onmt_translate_keeps_the_previous_output(work):
    (work / "bad.src").write_text("a __eou__ b\nlonely\n")
    (work / "pred.txt").write_text("previous predictions\n")
    out = cli(["onmt_translate", "-model", "run/model_step_2.pt", "-src", "bad.src",
               "-output", "pred.txt"], work, ok=False)
    assert error_line(out) == E + "-src, file bad.src, line 2: " + ONE_TURN
    assert (work / "pred.txt").read_text() == "previous predictions\n"


def test_a_10000_token_turn_is_truncated_and_counted(work):
    long_turn = " ".join("w%d" % (i % 50) for i in range(10000))
    (work / "long.src").write_text("a b __eou__ %s\nc d __eou__ e f\n" % long_turn)
    (work / "long.tgt").write_text("%s\nfine .\n" % long_turn)
    data = "{train: {path_src: long.src, path_tgt: long.tgt, transforms: [mirror_triple]}}"
    out = cli(["onmt_train", "-config", "mirror.yaml", "-data", data, "-train_steps", "6",
               "-save_model", "run/long", "-bucket_size", "2", "-batch_size", "2"], work)
    # a line counts once, however many passes over the corpus read it (six steps of one
    # batch each: six passes)
    counts = [ln.split("MirrorTripleTransform: ")[1] for ln in out.stderr.splitlines()
              if "MirrorTripleTransform: " in ln]
    assert len(counts) >= 3 and set(counts) == {"truncated_x: 1, truncated_y: 1"}, counts
    # both windows in one batch, x cut to -mirror_max_utterance_tokens (45): src tokens
    # 53 = (2 + marker + 45) + (2 + marker + 2), not 10,003 + 5
    assert "bsz:   53/  49/ 2" in out.stderr
    assert (work / "run/long_step_6.pt").exists()


def test_truncation_is_counted_per_line_not_per_pass():
    from argparse import Namespace

    from onmt_mirror.transforms.mirror_triple import MirrorTripleTransform

    t = MirrorTripleTransform(Namespace(
        mirror_turn_sep="__eou__", mirror_context_turns=1, mirror_max_context_tokens=3,
        mirror_max_utterance_tokens=3, mirror_bad_line="error"))
    line = "a b c d __eou__ e f g h".split()
    for _ in range(3):  # three passes over line 7 of corpus "train"
        t.apply({"src": list(line), "tgt": None, "cid": "train", "cid_line_number": 7})
    t.apply({"src": list(line), "tgt": None, "cid": "train", "cid_line_number": 8})
    t.apply({"src": list(line), "tgt": None, "cid": "valid", "cid_line_number": 7})
    assert t.stats() == "truncated_c: 3, truncated_x: 3"
    t.apply({"src": list(line), "tgt": None})  # a server request: no line to key on
    t.apply({"src": list(line), "tgt": None})
    assert t.stats() == "truncated_c: 5, truncated_x: 5"


def test_missing_vocabulary_file(work):
    out = cli(["onmt_train", "-config", "mirror.yaml", "-src_vocab", "run/nope.txt",
               "-save_model", "run/novocab"], work, ok=False)
    assert error_line(out) == E + ("src vocab file not found: run/nope.txt (build it "
                                   "with onmt_build_vocab)")
    assert not list(work.glob("run/novocab*"))


@pytest.mark.parametrize("output, message", [
    ("outdir", "-output outdir is a directory: give a file name"),
    ("nofolder/pred.txt", "-output nofolder/pred.txt: folder %s does not exist"),
])
def test_bad_output_path_is_refused_before_the_model_loads(work, output, message):
    (work / "outdir").mkdir(exist_ok=True)
    out = cli(["onmt_translate", "-model", "run/model_step_2.pt", "-src", "train.src",
               "-output", output], work, ok=False)
    if "%s" in message:
        message %= work / "nofolder"
    assert error_line(out) == E + message
    assert "Loading checkpoint" not in out.stderr
    assert not list(work.rglob("*.tmp")) and not list((work / "outdir").iterdir())


@pytest.mark.parametrize("content, message", [
    (None, "checkpoint not found: junk.pt"),
    (b"", "junk.pt is not a complete checkpoint (truncated, or not written by "
          "torch.save)"),
    (b"model weights, honest\n", "junk.pt is not a complete checkpoint (truncated, or "
                                 "not written by torch.save)"),
])
def test_missing_empty_or_foreign_checkpoint_is_one_line(work, content, message):
    junk = work / "junk.pt"
    junk.unlink(missing_ok=True)
    if content is not None:
        junk.write_bytes(content)
    out = cli(["onmt_translate", "-model", "junk.pt", "-src", "train.src", "-output",
               "junk_pred.txt"], work, ok=False)
    assert error_line(out) == E + message
    assert not (work / "junk_pred.txt").exists()


@pytest.mark.parametrize("overwrite, message", [
    (True, "vocabulary output vocab_dir is a directory: give a file name"),
    (False, "vocabulary output run/vocab.txt exists (add -overwrite to replace it)"),
])
def test_bad_vocabulary_output_is_refused_before_counting(work, overwrite, message):
    (work / "vocab_dir").mkdir(exist_ok=True)
    mirror_config(work, name="vocab.yaml", overwrite=overwrite)
    before = (work / "run/vocab.txt").read_bytes()
    out = cli(["onmt_build_vocab", "-config", "vocab.yaml", "-n_sample", "-1"]
              + (["-src_vocab", "vocab_dir"] if overwrite else []), work, ok=False)
    assert error_line(out) == E + message
    assert "Counter vocab" not in out.stderr
    assert (work / "run/vocab.txt").read_bytes() == before


def test_missing_corpus_file(work):
    data = "{train: {path_src: nope.src, path_tgt: train.tgt}}"
    out = cli(["onmt_build_vocab", "-config", "mirror.yaml", "-n_sample", "-1", "-data",
               data, "-src_vocab", "run/nope.vocab"], work, ok=False)
    assert error_line(out) == E + "train/path_src file not found: nope.src"


def test_mirror_options_with_a_stock_model(work):
    out = cli(["onmt_train", "-config", "stock.yaml", "-mirror_kl_weight", "0.5",
               "-mirror_nonfinite", "skip", "-save_model", "run/stockopt"], work, ok=False)
    assert error_line(out) == E + (
        "-mirror_kl_weight, -mirror_nonfinite: Mirror option(s), but the model is "
        "encoder_type 'rnn' (use -encoder_type mirror, or drop them)")
    assert not list(work.glob("run/stockopt*"))


def test_stock_checkpoint_for_mirror_decoding_keeps_the_previous_output(work):
    (work / "pred.txt").write_text("previous predictions\n")
    out = cli(["onmt_translate", "-model", "run/s_step_1.pt", "-src", "s.src", "-output",
               "pred.txt", "-mirror_z", "sample"], work, ok=False)
    assert error_line(out) == E + ("run/s_step_1.pt is not a Mirror checkpoint "
                                   "(encoder_type 'rnn'): -mirror_z applies to Mirror "
                                   "models only")
    assert (work / "pred.txt").read_text() == "previous predictions\n"


def test_successful_translation_replaces_the_output_whole(work):
    (work / "pred.txt").write_text("previous predictions\n")
    out = cli(["onmt_translate", "-model", "run/model_step_2.pt", "-src", "train.src",
               "-output", "pred.txt", "-max_length", "3"], work)
    assert "<unk>" not in out.stderr  # a tokenised -src: no warning
    assert len((work / "pred.txt").read_text().splitlines()) == 6
    assert not list(work.glob(".pred.txt.*"))  # no temporary file left behind


def test_untokenised_src_gets_an_unknown_word_warning(work):
    """Typed text ("tea?") where the corpus has "tea ?": 5 of 16 tokens unknown; none once
    tokenised like the corpus. A warning, and the translation still runs."""
    (work / "typed.src").write_text("do you like tea? __eou__ yes, very much.\n"
                                    "where is the station? __eou__ it is near the bank.\n")
    out = cli(["onmt_translate", "-model", "run/model_step_2.pt", "-src", "typed.src",
               "-output", "typed_pred.txt", "-max_length", "3"], work)
    assert ("-src typed.src: 31.2% of the tokens in its first 2 lines are not in the "
            "model's vocabulary and are read as <unk>; is it tokenised like the training "
            "data? (tokenised as the training data was, 0.0%: see docs/server.md, "
            '"Typed text")') in out.stderr
    assert len((work / "typed_pred.txt").read_text().splitlines()) == 2
