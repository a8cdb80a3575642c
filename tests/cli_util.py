"""Helpers for tests that drive the stock CLIs: run them, tiny corpora and configs."""
import os
import re
import subprocess
import sys

import yaml

BIN = os.path.dirname(sys.executable)
TESTS = os.path.dirname(os.path.abspath(__file__))
DIALOGUES = [
    ("do you like tea ?", "yes , very much .", "then let us have some tea ."),
    ("where is the station ?", "it is near the bank .", "thank you , i will walk there ."),
    ("what time is it ?", "it is five o'clock .", "oh no , i am late for work ."),
    ("can you help me ?", "sure , what is wrong ?", "my car will not start today ."),
    ("how was your trip ?", "it was wonderful .", "i am glad you enjoyed it ."),
    ("is it raining outside ?", "no , it is sunny .", "great , let us go to the park ."),
]


def cli(cmd, cwd, env=None, ok=True, timeout=600):
    """Run a stock CLI (or `python -c` with tests/ importable) in `cwd`."""
    full_env = dict(os.environ, PYTHONPATH=TESTS, **(env or {}))
    exe = [sys.executable] if cmd[0] == "python" else [os.path.join(BIN, cmd[0])]
    proc = subprocess.run(exe + cmd[1:], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def error_line(proc):
    """A failed CLI: exit 1, no traceback, exactly one error line; returns it. (A data
    worker may still log a line or two after it, so it need not be the last line.)"""
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("onmt_mirror: error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def write_corpus(folder, src="train.src", tgt="train.tgt"):
    (folder / src).write_text("".join("%s __eou__ %s\n" % (c, x) for c, x, _ in DIALOGUES))
    (folder / tgt).write_text("".join(y + "\n" for _, _, y in DIALOGUES))


def mirror_config(folder, name="mirror.yaml", **overrides):
    """A tiny Mirror (CPU, fixed seed) on `train.src/tgt`; returns the config's name."""
    corpus = {"path_src": "train.src", "path_tgt": "train.tgt",
              "transforms": ["mirror_triple"]}
    cfg = {"save_data": "run/sample", "src_vocab": "run/vocab.txt", "share_vocab": True,
           "overwrite": True, "data": {"train": corpus, "valid": dict(corpus)},
           "encoder_type": "mirror", "word_vec_size": 16, "hidden_size": 24, "layers": 1,
           "mirror_z_size": 6, "dropout": 0.0, "input_feed": 0,
           "mirror_kl_anneal_steps": 30, "save_model": "run/model",
           "save_checkpoint_steps": 100, "train_steps": 100, "valid_steps": 100,
           "report_every": 1, "batch_type": "sents", "batch_size": 4, "optim": "adam",
           "learning_rate": 0.01, "param_init": 0.1, "seed": 3, "num_workers": 1,
           "bucket_size": 64, "log_file": "run/train.log"}
    cfg.update(overrides)
    (folder / name).write_text(yaml.safe_dump(cfg))
    return name


def stock_config(folder, name="stock.yaml", **overrides):
    """A tiny stock seq2seq (RNN encoder-decoder with attention) on `s.src/s.tgt`."""
    (folder / "s.src").write_text("".join("%s %s\n" % (c, x) for c, x, _ in DIALOGUES))
    (folder / "s.tgt").write_text("".join(y + "\n" for _, _, y in DIALOGUES))
    corpus = {"path_src": "s.src", "path_tgt": "s.tgt"}
    cfg = {"save_data": "run/s", "src_vocab": "run/s.vocab", "share_vocab": True,
           "overwrite": True, "data": {"train": corpus, "valid": dict(corpus)},
           "word_vec_size": 16, "hidden_size": 24, "layers": 1, "dropout": 0.1,
           "save_model": "run/s", "train_steps": 4, "save_checkpoint_steps": 4,
           "valid_steps": 4, "report_every": 1, "batch_type": "sents", "batch_size": 4,
           "optim": "adam", "learning_rate": 0.01, "seed": 5, "num_workers": 1,
           "bucket_size": 64, "log_file": "run/s.log"}
    cfg.update(overrides)
    (folder / name).write_text(yaml.safe_dump(cfg))
    return name


def step_lines(log, prefix="Mirror step "):
    """Logged lines starting with `prefix`, without the timestamp and timings (the stock
    line's tok/s, the Mirror line's "; 3.1 steps/s; ETA 0:12:05")."""
    lines = [ln.split("] ", 1)[1] for ln in log.splitlines() if "] " + prefix in ln]
    return [ln.split(" tok/s;")[0].rsplit(";", 1)[0] if "tok/s" in ln else
            re.sub(r"; \S+ steps/s; ETA \S+$", "", ln) for ln in lines]
