"""Helpers for tests that drive the stock CLIs: run them, tiny corpora and configs."""
import atexit
import contextlib
import fcntl
import multiprocessing
import os
import re
import runpy
import subprocess
import sys
import tempfile

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
    """Run a stock CLI, `python -c CODE` (tests/ importable) or `python -m MODULE` in
    `cwd`; -> a CompletedProcess. Forked from a process that has imported torch and
    OpenNMT-py (their import was most of a CLI test's time), unless `env` changes what a
    process reads as it starts; then a fresh process."""
    full_env = dict(os.environ, PYTHONPATH=TESTS, **(env or {}))
    argv = [sys.executable if cmd[0] == "python" else os.path.join(BIN, cmd[0])] + cmd[1:]
    if _forkable(full_env):
        proc = _run_forked(argv, str(cwd), full_env, timeout)
    else:
        proc = subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True,
                              timeout=timeout)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


# Variables no import reads (the rest, e.g. ONMT_MIRROR_DISABLE, OMP_NUM_THREADS, the
# numerics of conftest.py, may be read as torch and OpenNMT-py are imported or loaded).
# PYTHONPATH's tests/ is on the fork server's sys.path; torch sets TORCHINDUCTOR_CACHE_DIR
# in os.environ to its default when it first needs it.
_READ_LATE = {"PYTHONPATH", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "PYTEST_CURRENT_TEST",
              "TORCHINDUCTOR_CACHE_DIR"}
_PRELOAD = ["torch", "torch._dynamo", "onmt.bin.build_vocab", "onmt.bin.train",
            "onmt.bin.translate", "cli_util"]  # torch._dynamo: first imported by nn.init
_server = {}  # the fork server's context and the environment it started with


def _forkable(env):
    started = _server.setdefault("env", dict(os.environ))
    return all(env.get(k) == started.get(k) for k in set(env) | set(started)
               if k not in _READ_LATE)


def _run_forked(argv, cwd, env, timeout):
    if "context" not in _server:
        _server["context"] = multiprocessing.get_context("forkserver")
        _server["context"].set_forkserver_preload(_PRELOAD)
    with tempfile.TemporaryDirectory() as tmp:
        out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        child = _server["context"].Process(target=_child, args=(argv, cwd, env, out, err))
        child.start()
        child.join(timeout)
        if child.exitcode is None:
            child.kill()
            child.join()
            raise subprocess.TimeoutExpired(argv, timeout)
        with open(out) as o, open(err) as e:
            return subprocess.CompletedProcess(argv, child.exitcode, o.read(), e.read())


def _child(argv, cwd, env, out, err):
    """In the forked process: what the interpreter does for `argv` (a console script,
    -c or -m), with its exit status, uncaught-exception hook and exit handlers."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    multiprocessing.set_start_method(None, force=True)  # the default again, not forkserver
    for fd, path in ((1, out), (2, err)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT)
        os.dup2(opened, fd)
        os.close(opened)
    sys.path.insert(0, TESTS)
    status = 0
    try:
        if argv[1] == "-c":
            sys.argv = ["-c"] + argv[3:]
            main = type(sys)("__main__")
            sys.modules["__main__"] = main
            exec(compile(argv[2], "<string>", "exec"), main.__dict__)
        elif argv[1] == "-m":
            sys.argv = [argv[2]] + argv[3:]
            sys.modules.pop(argv[2], None)  # as in a fresh process: run, not imported
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        else:
            sys.argv = argv
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exc:  # None: 0; a number: itself; anything else: printed, 1
        if exc.code is None or isinstance(exc.code, int):
            status = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            status = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def session_folder(tmp_path_factory, name):
    """A folder shared by the whole test session, its xdist workers included (their
    temporary roots lie side by side): build what it lacks while holding `locked`."""
    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent
    (root / name).mkdir(exist_ok=True)
    return root / name


@contextlib.contextmanager
def locked(folder):
    """One process at a time (e.g. to train a model the others will then find there)."""
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


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
    """A tiny Mirror (CPU, fixed seed) on `train.src/tgt`; returns the config's name. No
    data worker (each would be a fresh process importing torch): the stock seq2seq of
    stock_config and the bad-corpus tests read through one."""
    corpus = {"path_src": "train.src", "path_tgt": "train.tgt",
              "transforms": ["mirror_triple"]}
    cfg = {"save_data": "run/sample", "src_vocab": "run/vocab.txt", "share_vocab": True,
           "overwrite": True, "data": {"train": corpus, "valid": dict(corpus)},
           "encoder_type": "mirror", "word_vec_size": 16, "hidden_size": 24, "layers": 1,
           "mirror_z_size": 6, "dropout": 0.0, "input_feed": 0,
           "mirror_kl_anneal_steps": 30, "save_model": "run/model",
           "save_checkpoint_steps": 100, "train_steps": 100, "valid_steps": 100,
           "report_every": 1, "batch_type": "sents", "batch_size": 4, "optim": "adam",
           "learning_rate": 0.01, "param_init": 0.1, "seed": 3, "num_workers": 0,
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
