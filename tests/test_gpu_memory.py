"""Trainings sharing one card: -mirror_gpu_memory_gb caps one, and results/run.py starts as
many as the card's memory holds."""
import sys

import pytest
import torch

from conftest import REPO
from onmt_mirror.errors import MirrorError
from onmt_mirror.registration.training import cap_gpu_memory

sys.path.insert(0, str(REPO / "results"))
import run  # noqa: E402

PLAN = {"gpu_memory_gb": 24, "jobs": {"mirror": {}, "paper": {}, "seq2seq": {"gpu_memory_gb": 8},
                                      "hred": {"gpu_memory_gb": 8}}}


def test_jobs_start_while_their_caps_fit_the_card():
    waiting = ["mirror", "paper", "seq2seq", "hred"]
    assert run.startable(PLAN, waiting, [], 79.6) == ["mirror", "paper", "seq2seq", "hred"]
    assert run.startable(PLAN, waiting, [], 60) == ["mirror", "paper", "seq2seq"]
    assert run.startable(PLAN, waiting, [], 40) == ["mirror"]
    assert run.startable(PLAN, waiting[1:], ["mirror"], 40) == []
    assert run.startable(PLAN, waiting[2:], ["mirror"], 42) == ["seq2seq"]
    with pytest.raises(run.RunError, match="job mirror needs 25 GB of GPU memory, the card "
                                           "has 24.0"):
        run.startable(PLAN, waiting, [], 24)
    with pytest.raises(run.RunError, match="job x: no gpu_memory_gb"):
        run.startable({"jobs": {"x": {}}}, ["x"], [], 80)


def test_every_shipped_plan_fits_an_80_gb_card():
    for path in sorted((REPO / "results").glob("*.yaml")):
        plan = run.read_plan(str(path))
        trained = [n for n, job in plan["jobs"].items() if job.get("config")]
        assert run.startable(plan, trained, [], 79.6), path


def test_a_memory_cap_on_the_cpu_is_refused():
    with pytest.raises(MirrorError, match="-mirror_gpu_memory_gb 8: this training runs on "
                                          "the CPU"):
        cap_gpu_memory(8.0, torch.device("cpu"))
    cap_gpu_memory(0.0, torch.device("cpu"))
