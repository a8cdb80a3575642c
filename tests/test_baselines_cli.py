"""Each baseline recipe, shrunk, through the stock CLIs: onmt_build_vocab, onmt_train,
and onmt_translate with an n-best list. The recipes themselves are loaded
(examples/dailydialog/*.yaml) and only sizes, paths and the schedule are overridden, so a
broken recipe fails here.

Dialogues have four turns, so HRED and VHRED run with two context turns
(-mirror_context_turns 2: src = c1 ｟mirror_turn｠ c2 ｟mirror_query｠ x).
"""
import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

BIN = os.path.dirname(sys.executable)
DIALOGUES = [
    ("hello .", "do you like tea ?", "yes , very much .", "then let us have some tea ."),
    ("excuse me .", "where is the station ?", "it is near the bank .",
     "thank you , i will walk there ."),
    ("hi tom .", "what time is it ?", "it is five o'clock .",
     "oh no , i am late for work ."),
    ("hey .", "can you help me ?", "sure , what is wrong ?",
     "my car will not start today ."),
    ("welcome back .", "how was your trip ?", "it was wonderful .",
     "i am glad you enjoyed it ."),
    ("good morning .", "is it raining outside ?", "no , it is sunny .",
     "great , let us go to the park ."),
]
TINY = {"word_vec_size": 16, "hidden_size": 32, "layers": 1, "dropout": 0.0,
        "gpu_ranks": [], "world_size": 1, "model_dtype": "fp32", "num_workers": 0,
        "bucket_size": 64, "batch_size": 6, "valid_batch_size": 6, "learning_rate": 0.01,
        "train_steps": 20, "valid_steps": 20, "save_checkpoint_steps": 20,
        "report_every": 10, "start_decay_steps": 1000, "early_stopping": 0,
        "keep_checkpoint": -1, "src_vocab_size": 0, "tgt_vocab_size": 0}


def run(cmd, cwd):
    exe = [os.path.join(BIN, cmd[0])] if not cmd[0].endswith("python") else [sys.executable]
    proc = subprocess.run(exe + cmd[1:], cwd=cwd, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


def tiny_recipe(work, name, **overrides):
    """examples/dailydialog/<name>.yaml with tiny sizes and this folder's corpus."""
    recipe = REPO / "examples" / "dailydialog" / ("%s.yaml" % name)
    cfg = yaml.safe_load(recipe.read_text())
    cfg.update(TINY)
    for corpus in cfg["data"].values():
        corpus.update(path_src="train.src", path_tgt="train.tgt")
    side = "bwd" if name == "mmi_backward" else "fwd"
    cfg.update(save_data="run/%s/samples" % side, src_vocab="run/%s/vocab.txt" % side,
               save_model="run/%s/model" % name, log_file="run/%s.log" % name)
    if cfg.get("encoder_type") == "mirror":
        cfg.update(mirror_z_size=8, mirror_kl_anneal_steps=10)
    cfg.update(overrides)
    path = work / ("%s.yaml" % name)
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path.name


@pytest.fixture(scope="session")
def work(tmp_path_factory):
    """The corpus, the two vocabularies (forward on mirror_triple, backward on
    mirror_backward), and a cache of trained checkpoints shared by the re-rank tests."""
    tmp = tmp_path_factory.mktemp("baselines")
    (tmp / "train.src").write_text("".join(" __eou__ ".join(d[:3]) + "\n"
                                           for d in DIALOGUES))
    (tmp / "train.tgt").write_text("".join(d[3] + "\n" for d in DIALOGUES))
    for name in ("seq2seq", "mmi_backward"):
        run(["onmt_build_vocab", "-config", tiny_recipe(tmp, name), "-n_sample", "-1"], tmp)
    return tmp


def train(work, name, **overrides):
    """Train a tiny recipe once per session; returns the checkpoint's path."""
    ckpt = work / ("run/%s/model_step_%d.pt" % (name, overrides.get("train_steps", 20)))
    if not ckpt.exists():
        run(["onmt_train", "-config", tiny_recipe(work, name, **overrides)], work)
    return ckpt


@pytest.mark.parametrize("name,turns", [("seq2seq", 1), ("hred", 2), ("cvae", 1),
                                        ("vhred", 2)])
def test_baseline_trains_and_decodes_n_best_with_stock_clis(work, name, turns):
    ckpt = train(work, name, mirror_context_turns=turns)
    out = "pred_%s.txt" % name
    run(["onmt_translate", "-model", str(ckpt), "-src", "train.src", "-output", out,
         "-beam_size", "3", "-n_best", "2", "-max_length", "10", "-length_penalty", "none"],
        work)
    lines = (work / out).read_text().splitlines()
    assert len(lines) == 2 * len(DIALOGUES)
    # the model summary OpenNMT-py logs (with num_workers 0 the stock data iterator resets
    # the logger, so the log file ends before the training steps)
    log = (work / ("run/%s.log" % name)).read_text()
    if name in ("hred", "vhred"):
        assert "HierarchicalContextEncoder" in log
    if name in ("cvae", "vhred"):
        assert "dec_x_cyz" not in log and "dec_y_cxz" in log  # Dec1 only


def test_backward_model_reads_windows_as_y_to_x(work):
    """The mirror_backward transform: onmt_build_vocab's samples show src = y, tgt = x."""
    run(["onmt_build_vocab", "-config", "mmi_backward.yaml", "-n_sample", "2",
         "-dump_samples"], work)
    src = (work / "run/bwd/sample/train.sample.src").read_text().splitlines()
    tgt = (work / "run/bwd/sample/train.sample.tgt").read_text().splitlines()
    pairs = set(zip(src, tgt))
    assert ("then let us have some tea .", "yes , very much .") in pairs


BASELINES = ("seq2seq", "hred", "cvae", "vhred", "mmi_backward")


def test_every_baseline_recipe_key_is_an_onmt_train_option():
    """onmt_train silently ignores unknown keys; a typo would change nothing visible."""
    import re

    help_text = subprocess.run([os.path.join(BIN, "onmt_train"), "-h"], capture_output=True,
                               text=True, timeout=300, cwd=REPO).stdout
    known = set(re.findall(r"(?<![\w-])--?([A-Za-z]\w*)", help_text))
    for corpus in ("dailydialog", "movietriples"):
        # the paper's Mirror setting (DailyDialog's mirror.yaml adds the latent remedy,
        # which the comparison gives the CVAE by options: results/comparison.yaml)
        paper = "mirror_paper.yaml" if corpus == "dailydialog" else "mirror.yaml"
        mirror = yaml.safe_load((REPO / "examples" / corpus / paper).read_text())
        for name in BASELINES:
            cfg = yaml.safe_load((REPO / "examples" / corpus / (name + ".yaml")).read_text())
            assert not sorted(set(cfg) - known), (corpus, name)
            # same data and vocabulary size as Mirror; the paper's sizes
            assert cfg["data"]["train"]["path_src"] == mirror["data"]["train"]["path_src"]
            assert (cfg["hidden_size"], cfg["word_vec_size"], cfg["src_vocab_size"]) == \
                (1000, 200, 20000)
            assert cfg["train_steps"] == mirror["train_steps"]
            if name in ("cvae", "vhred"):  # Mirror's file, model lines aside
                differ = {k for k in set(cfg) | set(mirror) if cfg.get(k) != mirror.get(k)}
                assert differ <= {"mirror_decoders", "mirror_prior", "save_model",
                                  "log_file", "tensorboard_log_dir",
                                  "mirror_context_encoder"}, differ
