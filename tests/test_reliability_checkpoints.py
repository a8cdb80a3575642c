"""Checkpoint files: a crash while saving leaves the previous checkpoint intact, and a
crafted pickle is refused (never run) by onmt_translate and onmt_train -train_from."""
import argparse
import subprocess
import sys

import onmt.models.model_saver
import pytest
import torch
from onmt.models.model_saver import ModelSaver

from onmt_mirror.checkpoint_io import TorchCheckpointIO, atomic_save, safe_load
from onmt_mirror.errors import MirrorError
from cli_util import cli, error_line, mirror_config, write_corpus

E = "onmt_mirror: error: "


class Unpicklable:
    """Fails half-way through torch.save (after the tensors before it were pickled)."""

    def __reduce__(self):
        raise RuntimeError("disk full")


class FakeOptim:
    def state_dict(self):
        return {"training_step": 6}


def saver(tmp_path, model_opt):
    model = torch.nn.Module()
    model.encoder = torch.nn.Linear(300, 300)
    model.generator = torch.nn.Linear(300, 7)
    return ModelSaver(str(tmp_path / "m"), model, model_opt, {}, FakeOptim())


@pytest.fixture
def no_vocab(monkeypatch):
    monkeypatch.setattr(onmt.models.model_saver, "vocabs_to_dict", lambda vocabs: {})


def test_model_saver_writes_atomically(tmp_path, no_vocab):
    assert isinstance(onmt.models.model_saver.torch, TorchCheckpointIO)
    saver(tmp_path, argparse.Namespace(size=1)).save(5)
    good = (tmp_path / "m_step_5.pt").read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        saver(tmp_path, argparse.Namespace(size=1, bad=Unpicklable())).save(5)
    assert (tmp_path / "m_step_5.pt").read_bytes() == good
    assert safe_load(str(tmp_path / "m_step_5.pt"))["opt"].size == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m_step_5.pt"]


def test_stock_torch_save_would_have_destroyed_it(tmp_path, no_vocab, monkeypatch):
    """The control: OpenNMT-py's own torch.save(checkpoint, path) truncates in place."""
    saver(tmp_path, argparse.Namespace(size=1)).save(5)
    good = (tmp_path / "m_step_5.pt").read_bytes()
    monkeypatch.setattr(onmt.models.model_saver, "torch", torch)
    with pytest.raises(RuntimeError, match="disk full"):
        saver(tmp_path, argparse.Namespace(size=1, bad=Unpicklable())).save(5)
    assert (tmp_path / "m_step_5.pt").read_bytes() != good


KILLED_MID_WRITE = """
import os, sys, torch
from onmt_mirror import checkpoint_io
temp_beside = checkpoint_io._temp_beside

class Dies:
    def __init__(self, f):
        self.f, self.n = f, 0
    def write(self, data):
        written = self.f.write(data)
        self.n += len(data)
        if self.n > 1 << 20:  # killed 1 MiB into the new checkpoint (what reached disk)
            self.f.flush()
            os._exit(9)
        return written
    def __getattr__(self, name):
        return getattr(self.f, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.f.close()

def dying(path):
    f, tmp = temp_beside(path)
    return Dies(f), tmp

checkpoint_io._temp_beside = dying
checkpoint_io.atomic_save({"w": torch.ones(4, 1 << 20)}, sys.argv[1])
"""


def killed_mid_save(tmp_path):
    """A checkpoint, then a process SIGKILLed while saving over it; -> its temporary."""
    path = tmp_path / "model_step_5.pt"
    atomic_save({"w": torch.zeros(3)}, str(path))
    out = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 9, out.stderr
    assert torch.equal(safe_load(str(path))["w"], torch.zeros(3))
    leftovers = [p for p in tmp_path.iterdir() if p.name != path.name]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 1 << 20  # the temp
    return leftovers[0]


def test_a_process_killed_mid_save_leaves_the_previous_checkpoint(tmp_path):
    assert killed_mid_save(tmp_path).name.startswith(".model_step_5.pt.")


def test_the_next_run_removes_what_a_killed_save_left(tmp_path, caplog):
    """onmt_train's build_model_saver (as train_single calls it) deletes the temporaries
    of this -save_model only, and says so."""
    import onmt.train_single

    left = killed_mid_save(tmp_path)
    keep = [tmp_path / ".other_step_5.pt.abc123.tmp", tmp_path / ".model_step_5.pt.swp"]
    for p in keep:
        p.write_bytes(b"x")
    best = tmp_path / ".model_best_step_4.pt.q1w2e3r4.tmp"
    best.write_bytes(b"x")
    opt = argparse.Namespace(save_model=str(tmp_path / "model"), keep_checkpoint=-1,
                             save_format="pytorch", mirror_checkpoint_writer="inline")
    with caplog.at_level("INFO", logger="onmt"):
        onmt.train_single.build_model_saver(None, opt, None, {}, None, -1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model_step_5.pt"] + [p.name for p in keep])
    assert ("Removed 2 temporary file(s) left by an interrupted checkpoint save in %s: "
            "%s, %s" % (tmp_path, best.name, left.name)) in caplog.text


def test_missing_checkpoint_is_one_line_and_still_an_oserror(tmp_path):
    with pytest.raises(FileNotFoundError) as err:  # what stock callers caught
        safe_load(str(tmp_path / "nope.pt"))
    assert isinstance(err.value, MirrorError)  # printed as one line by the CLIs
    assert str(err.value) == "checkpoint not found: %s" % (tmp_path / "nope.pt")


def test_truncated_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "cut.pt"
    atomic_save({"w": torch.ones(1000)}, str(path))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(MirrorError) as err:
        safe_load(str(path))
    assert str(err.value) == ("%s is not a complete checkpoint (truncated, or not "
                              "written by torch.save)" % path)


class Payload:
    """What an attacker ships: unpickling it would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    """A trained tiny Mirror whose checkpoint's options were swapped for a payload."""
    work = tmp_path_factory.mktemp("evil")
    write_corpus(work)
    mirror_config(work, train_steps=1, save_checkpoint_steps=1, valid_steps=1)
    cli(["onmt_build_vocab", "-config", "mirror.yaml", "-n_sample", "-1"], work)
    cli(["onmt_train", "-config", "mirror.yaml"], work)
    ckpt = safe_load(str(work / "run/model_step_1.pt"))
    ckpt["opt"] = Payload(str(work / "PWNED"))
    torch.save(ckpt, work / "evil.pt")
    return work


REFUSED = ("evil.pt: refused to load: it pickles io.open, which is not on the "
           "weights-only allow-list (loading it could run arbitrary code)")


def test_the_crafted_checkpoint_really_runs_code_when_unpickled(evil, tmp_path):
    marker = tmp_path / "PWNED"
    torch.save({"opt": Payload(str(marker))}, tmp_path / "p.pt")
    torch.load(tmp_path / "p.pt", weights_only=False)  # what a plain pickle load does
    assert marker.exists()


@pytest.mark.parametrize("force_unsafe", ["0", "1"])
def test_onmt_translate_refuses_a_malicious_checkpoint(evil, force_unsafe):
    out = cli(["onmt_translate", "-model", "evil.pt", "-src", "train.src", "-output",
               "evil_pred.txt"], evil, ok=False,
              env={"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": force_unsafe})
    assert error_line(out) == E + REFUSED
    assert not (evil / "PWNED").exists() and not (evil / "evil_pred.txt").exists()


def test_onmt_train_from_refuses_a_malicious_checkpoint(evil):
    out = cli(["onmt_train", "-config", "mirror.yaml", "-train_from", "evil.pt",
               "-save_model", "run/evil"], evil, ok=False)
    assert error_line(out) == E + REFUSED
    assert not (evil / "PWNED").exists() and not list(evil.glob("run/evil*"))
