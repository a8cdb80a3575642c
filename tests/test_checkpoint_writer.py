"""Checkpoints written in the background (checkpoint_io.BackgroundWriter): the file holds
the checkpoint as it was when saved, the one it replaces goes only once it has landed,
and a failed write keeps the old one and raises in the training thread."""
import threading

import pytest
import torch

from onmt_mirror import checkpoint_io
from onmt_mirror.checkpoint_io import BackgroundWriter, TorchCheckpointIO, safe_load


@pytest.fixture
def gate(monkeypatch):
    """atomic_save held until the test opens the gate."""
    opened = threading.Event()
    save = checkpoint_io.atomic_save

    def held(obj, path):
        assert opened.wait(10)
        return save(obj, path)

    monkeypatch.setattr(checkpoint_io, "atomic_save", held)
    return opened


def test_the_write_holds_the_checkpoint_as_saved_and_removes_the_old_one_after(tmp_path,
                                                                               gate):
    io = TorchCheckpointIO()
    io.writer = BackgroundWriter()
    old, new = tmp_path / "m_step_1.pt", tmp_path / "m_step_2.pt"
    torch.save({"w": torch.zeros(3)}, old)
    weight = torch.ones(3)
    io.save({"model": {"w": weight}, "optim": [weight, 7]}, str(new))
    weight.add_(5)  # training goes on while the write waits
    io.remove(str(old))
    assert old.exists() and not new.exists()
    gate.set()
    io.wait()
    saved = safe_load(str(new))
    assert saved["model"]["w"].tolist() == [1.0, 1.0, 1.0] and saved["optim"][1] == 7
    assert not old.exists() and [p.name for p in tmp_path.iterdir()] == [new.name]


def test_a_failed_write_is_raised_by_the_next_save(tmp_path, monkeypatch):
    def full(obj, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_io, "atomic_save", full)
    io = TorchCheckpointIO()
    io.writer = BackgroundWriter()
    io.save({"w": torch.ones(2)}, str(tmp_path / "m_step_2.pt"))
    with pytest.raises(OSError, match="No space left"):
        io.save({"w": torch.ones(2)}, str(tmp_path / "m_step_3.pt"))
    assert list(tmp_path.iterdir()) == []


def test_removal_queued_behind_a_failed_write_is_dropped(tmp_path, monkeypatch):
    opened = threading.Event()

    def full(obj, path):
        assert opened.wait(10)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_io, "atomic_save", full)
    io = TorchCheckpointIO()
    io.writer = BackgroundWriter()
    old = tmp_path / "m_step_1.pt"
    old.write_bytes(b"old")
    io.save({"w": torch.ones(2)}, str(tmp_path / "m_step_2.pt"))
    io.remove(str(old))
    opened.set()
    with pytest.raises(OSError, match="No space left"):
        io.wait()
    assert old.read_bytes() == b"old"
    io.wait()  # raised once


@pytest.mark.parametrize("background", [False, True])
def test_the_save_after_the_best_copy_links_it(tmp_path, gate, background):
    """-mirror_keep_best's copy, then the trainer's checkpoint of the same step: one
    write and a hard link, made once the copy has landed."""
    io = TorchCheckpointIO()
    io.writer = BackgroundWriter() if background else None
    best, regular = tmp_path / "m_best_step_4.pt", tmp_path / "m_step_4.pt"
    if not background:
        gate.set()
    io.save({"w": torch.ones(2)}, str(best))
    io.link_next_save(str(regular), str(best))
    io.save({"w": torch.zeros(2)}, str(regular))  # the same content in training
    assert regular.exists() != background
    gate.set()
    io.wait()
    assert regular.stat().st_ino == best.stat().st_ino
    io.save({"w": torch.zeros(2)}, str(regular))  # only the save named is linked
    io.wait()
    assert safe_load(str(regular))["w"].tolist() == [0.0, 0.0]
    assert safe_load(str(best))["w"].tolist() == [1.0, 1.0]
