"""The captured training step inside the trainer: the batches it reads, and validation
between its steps (registration/data.py's in-process reading, resume.py). Reading a validation batch must put the host's generators back and leave the
CUDA generators alone: re-seeding a CUDA generator after capture made cuDNN reallocate
its LSTM dropout state, freeing the buffer the captured graphs read, and the recipe died
with an illegal memory access at the first replay after its first validation."""
import os
import random
import subprocess
import sys
import types

import numpy as np
import onmt.trainer
import pytest
import torch
from onmt.inputters.dynamic_iterator import OnDeviceDatasetIter
from onmt.utils.optimizers import Optimizer

from conftest import REPO, make_batch
from onmt_mirror.losses.mirror_loss import MirrorStatistics
from onmt_mirror.registration.data import InProcessValidation
from onmt_mirror.registration.patching import original
from onmt_mirror.registration.training import captured_accumulation, host_batches
from onmt_mirror.training.captured_step import CapturedStep
from test_captured_step import assert_same_weights, build, exact, fake_trainer  # noqa: F401


def test_the_captured_step_reads_the_workers_host_batches():
    """With the captured step the trainer iterates the data workers' (pinned) batches,
    not the stock iterator that copies each to the GPU; other trainers keep it."""
    loader = [({"src": torch.zeros(2, 3, 1)}, 0)]
    stock = OnDeviceDatasetIter(loader, torch.device("cpu"))
    captured = types.SimpleNamespace(mirror_step=object())
    assert host_batches(captured, stock) is loader
    assert host_batches(types.SimpleNamespace(), stock) is stock
    assert host_batches(captured, loader) is loader


class Reading:
    """Validation batches whose reading draws from every host generator, as transforms
    may."""

    def __iter__(self):
        for i in range(3):
            yield (torch.rand(()).item(), random.random(), float(np.random.rand()), i)


def seed_host(seed):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def host_draws():
    return torch.rand(()).item(), random.random(), float(np.random.rand())


def test_validation_reading_restores_the_host_generators_only(monkeypatch):
    """The generators after a pass are those before it plus the stock DataLoader's one
    base-seed draw, and the CUDA generators are never set (a CUDA machine faked)."""
    cuda_set = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all",
                        lambda: [torch.zeros(16, dtype=torch.uint8)])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", cuda_set.append)
    seed_host(3)
    batches = list(InProcessValidation(Reading()))
    after = host_draws()
    seed_host(3)
    torch.empty((), dtype=torch.int64).random_()
    assert after == host_draws()
    assert [b[3] for b in batches] == [0, 1, 2]
    assert cuda_set == []


def validate(model, batches):
    """What the stock Trainer.validate does to the model: eval, forward, train."""
    model.eval()
    with torch.no_grad():
        for src, tgt, src_len in InProcessValidation(batches):
            model(src, tgt, src_len)
    model.train()


def train_around_a_validation(captured, dropout=0.0, steps=8, validate_at=3):
    """`steps` optimizer steps of batches of 5, 6 and 7 triples (three bucket keys, the
    third first met after the validation), with a validation pass after `validate_at`."""
    model, loss = build("mirror", device="cuda", dropout=dropout)
    adam = torch.optim.Adam(model.parameters(), lr=0.01, eps=1e-3)
    optim = Optimizer(adam, 0.01, max_grad_norm=1.0)
    trainer = fake_trainer(model, loss, optim)
    step = CapturedStep(model, loss.total, adam, None, 1.0, False) if captured else None
    valid = [tuple(t.cuda() for t in make_batch(50 + i, 4)) for i in range(2)]
    stats = MirrorStatistics()
    for i in range(steps):
        size = 5 + i % 2 if i < validate_at else 5 + i % 3
        batch = dict(zip(("src", "tgt", "srclen"),
                         (t.cuda() for t in make_batch(i, size))))
        torch.manual_seed(100 + i)
        if captured:
            captured_accumulation(trainer, step, [batch], float(size), stats,
                                  MirrorStatistics())
        else:
            original(onmt.trainer.Trainer, "_gradient_accumulation")(
                trainer, [batch], float(size), stats, MirrorStatistics())
        if i + 1 == validate_at:
            validate(model, valid)
            torch.cuda.empty_cache()  # a graph reading freed memory then faults
    torch.cuda.synchronize()
    return model, stats, step


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


@cuda
def test_captured_step_after_a_validation_trains_like_the_stock_step(exact):
    """Captured steps, a validation, a new bucket key, then replays of the keys captured
    before it: the weights and statistics of the stock step run the same way."""
    stock, stock_stats, _ = train_around_a_validation(False)
    ours, our_stats, step = train_around_a_validation(True)
    assert len(step.forward_graphs) == 3
    assert our_stats.loss == pytest.approx(stock_stats.loss, rel=1e-5)
    assert_same_weights(ours, stock, rtol=1e-4, atol=1e-5)


DROPOUT_RUN = """
import torch, test_validation_graphs as t
model, stats, step = t.train_around_a_validation(True, dropout=0.3, steps=12)
assert len(step.forward_graphs) == 3, len(step.forward_graphs)
assert all(p.isfinite().all() for p in model.parameters()) and stats.loss == stats.loss
print("replayed after the validation, loss %.4f" % stats.loss)
"""


@cuda
def test_graphs_with_lstm_dropout_replay_after_a_validation():
    """The recipe's crash in small: 2-layer LSTMs with dropout (cuDNN's dropout state),
    captured, a validation, a new key, then the old graphs again. In a child process:
    an illegal memory access would break every later CUDA test of this one."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", DROPOUT_RUN], cwd=REPO / "tests", env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "replayed after the validation" in run.stdout
