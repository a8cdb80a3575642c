"""Interrupted training: kill onmt_train after a checkpoint, -train_from it, and get the
same losses and the same final weights, optimizer state, step and KL-annealing counter
as a run that was never interrupted (CPU, fixed seed, z sampled every batch).

Stock OpenNMT-py 3.5.1 restarts the data at the first batch and re-seeds the generators
on -train_from, so without registration/checkpoints.py the losses after step 10 differ.
"""
import io
import os
import shutil
import signal
import subprocess
import time

import torch
from onmt.utils.optimizers import Optimizer

from cli_util import BIN, TESTS, cli, mirror_config, step_lines, write_corpus
from onmt_mirror.registration.checkpoints import restore_scaler

STEPS, CKPT = 20, 10


def kill_after_checkpoint(work, cfg):
    """Start onmt_train, SIGKILL it once run/model_step_CKPT.pt exists (written
    atomically, so complete when it appears)."""
    proc = subprocess.Popen([os.path.join(BIN, "onmt_train"), "-config", cfg], cwd=work,
                            env=dict(os.environ, PYTHONPATH=TESTS),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    ckpt = work / ("run/model_step_%d.pt" % CKPT)
    deadline = time.time() + 600
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    return ckpt


def final_state(path):
    ckpt = torch.load(path, weights_only=True)
    optim = ckpt["optim"]
    return ckpt["model"], ckpt["generator"], optim["optimizer"]["state"], optim


def same_tensors(a, b):
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else same_tensors(a[k], b[k])
        for k in a)


def test_killed_and_resumed_run_matches_an_uninterrupted_one(tmp_path):
    runs = {}
    for name in ("whole", "killed"):
        work = tmp_path / name
        work.mkdir()
        write_corpus(work)
        mirror_config(work, train_steps=STEPS, save_checkpoint_steps=CKPT, valid_steps=CKPT,
                      num_workers=0)  # no data worker to start at each run and validation
        runs[name] = work
    cli(["onmt_build_vocab", "-config", "mirror.yaml", "-n_sample", "-1"], runs["whole"])
    (runs["killed"] / "run").mkdir()  # the same corpus: the same vocabulary
    shutil.copy(runs["whole"] / "run/vocab.txt", runs["killed"] / "run/vocab.txt")
    cli(["onmt_train", "-config", "mirror.yaml"], runs["whole"])
    ckpt = kill_after_checkpoint(runs["killed"], "mirror.yaml")
    resumed = cli(["onmt_train", "-config", "mirror.yaml", "-train_from", str(ckpt),
                   "-log_file", "run/resume.log"], runs["killed"])
    assert ("Resuming: skipping the %d training batches the checkpoint has seen" % CKPT
            in resumed.stderr)

    whole = step_lines((runs["whole"] / "run/train.log").read_text())
    after = step_lines((runs["killed"] / "run/resume.log").read_text())
    assert len(whole) == STEPS and len(after) == STEPS - CKPT
    assert after == whole[CKPT:]  # every logged loss term, kl and kl_weight

    model_a, gen_a, adam_a, optim_a = final_state(runs["whole"] / "run/model_step_20.pt")
    model_b, gen_b, adam_b, optim_b = final_state(runs["killed"] / "run/model_step_20.pt")
    assert same_tensors(model_a, model_b) and same_tensors(gen_a, gen_b)
    assert same_tensors(adam_a, adam_b)
    assert optim_a["training_step"] == optim_b["training_step"] == STEPS + 1
    assert int(model_b["kl_annealing.step"]) == STEPS
    assert optim_b["mirror_resume"]["batches"] == STEPS


def test_the_fp16_loss_scale_travels_in_the_checkpoint():
    """The scaler's scale and growth counter go into the optimizer's state dict (as plain
    numbers, weights-only loadable) and come back on resume: a fresh GradScaler starts at
    65,536 with its counter at 0."""
    weight = torch.nn.Parameter(torch.ones(3))
    saved_scale = {"scale": 512.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                   "growth_interval": 2000, "_growth_tracker": 37}
    optim = Optimizer(torch.optim.Adam([weight]), 0.1)
    optim._scaler = torch.amp.GradScaler("cpu")
    optim._scaler.load_state_dict(saved_scale)
    buffer = io.BytesIO()
    torch.save(optim.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["mirror_resume"]["scaler"] == saved_scale
    fresh = Optimizer(torch.optim.Adam([weight]), 0.1)
    fresh._scaler = torch.amp.GradScaler("cpu")
    assert fresh._scaler.get_scale() == 65536.0
    restore_scaler(fresh, state["mirror_resume"])
    assert fresh._scaler.state_dict() == saved_scale
