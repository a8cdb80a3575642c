"""How the plugin enters OpenNMT-py: the .pth hook, registries, options, errors."""
import multiprocessing
import os
import subprocess
import sys

import onmt.train_single
import pytest
from onmt.constants import CorpusTask
from onmt.inputters.dynamic_iterator import DynamicDatasetIter
from onmt.opts import train_opts
from onmt.train_single import _init_train
from onmt.utils.parse import ArgumentParser

import spawn_probe
from cli_util import DIALOGUES, cli, mirror_config, write_corpus
from onmt_mirror.registration import original

BIN = os.path.dirname(sys.executable)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=300)


def test_startup_stays_cheap():
    out = python("import sys; print('torch' in sys.modules, 'onmt' in sys.modules, "
                 "'onmt_mirror._hook' in sys.modules)")
    assert out.stdout.split() == ["False", "False", "True"]


def test_registered_after_import_onmt_and_switch_off():
    code = ("import onmt, onmt.trainer; from onmt.transforms import AVAILABLE_TRANSFORMS;"
            "print('mirror_triple' in AVAILABLE_TRANSFORMS, "
            "onmt.trainer.LossCompute.__name__)")
    assert python(code).stdout.split() == ["True", "LossComputeFactory"]
    assert python(code, ONMT_MIRROR_DISABLE="1").stdout.split() == ["False",
                                                                    "LossCompute"]


@pytest.mark.parametrize("disable,expected", [
    ("0", (True, "LossComputeFactory", "MirrorStatistics")),
    ("1", (False, "LossCompute", "Statistics"))])
def test_plugin_loads_in_spawned_workers(monkeypatch, disable, expected):
    """OpenNMT-py's data workers are spawned: the .pth hook, not the parent, must load it."""
    monkeypatch.setenv("ONMT_MIRROR_DISABLE", disable)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(spawn_probe.plugin_state) == expected


def test_onmt_train_help_lists_plugin_options():
    out = subprocess.run([os.path.join(BIN, "onmt_train"), "-h"], capture_output=True,
                         text=True, timeout=300).stdout
    for opt in ("-mirror_z_size", "-mirror_decoders", "-mirror_kl_anneal_steps",
                "-mirror_context_turns", "Transform/MirrorTriple", "mirror_triple"):
        assert opt in out


def test_wrong_opennmt_version_is_one_clear_line():
    out = python("import onmt; onmt.__version__ = '3.4.3'; import onmt_mirror.registration",
                 ONMT_MIRROR_DISABLE="1")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == ("onmt_mirror: error: onmt_mirror needs OpenNMT-py 3.5.1,"
                                  " found 3.4.3: pip install --no-deps opennmt-py==3.5.1 "
                                  "(or set ONMT_MIRROR_DISABLE=1)")


def test_mirror_options_on_a_stock_checkpoint_are_refused(stock_runs):
    out = subprocess.run([os.path.join(BIN, "onmt_translate"), "-model", "run/s_step_12.pt",
                          "-src", "s.src", "-output", "p.txt", "-mirror_z", "sample"],
                         cwd=stock_runs["0"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "onmt_mirror: error: run/s_step_12.pt is not a Mirror checkpoint (encoder_type "
        "'rnn'): -mirror_z applies to Mirror models only")
    assert "Traceback" not in out.stderr


def test_mirror_adam_is_fused_on_cuda_only():
    """registration/optimizer.py: Mirror's Adam on CUDA is torch's fused kernel; on the
    CPU, and for stock models anywhere, `-optim adam` stays the stock optimizer."""
    from argparse import Namespace
    from unittest import mock

    import torch
    from conftest import tiny_config

    import onmt.utils.optimizers as optimizers
    from onmt_mirror.models.mirror import MirrorModel

    opt = Namespace(optim="adam", learning_rate=1e-3, adam_beta1=0.9, adam_beta2=0.999)
    mirror, stock = MirrorModel(tiny_config()), torch.nn.Linear(3, 3)
    assert not optimizers.build_torch_optimizer(mirror, opt).defaults["fused"]
    with mock.patch.object(torch.Tensor, "is_cuda", new=True):  # parameters "on CUDA"
        fused = optimizers.build_torch_optimizer(mirror, opt)
        plain = optimizers.build_torch_optimizer(stock, opt)
    assert fused.defaults["fused"] and fused.defaults["betas"] == (0.9, 0.999)
    assert not plain.defaults["fused"]
    assert sum(p.numel() for g in fused.param_groups for p in g["params"]) == \
        sum(p.numel() for p in mirror.parameters())


CPU_ONLY = pytest.mark.skipif(__import__("torch").cuda.is_available(),
                              reason="checks the message on a machine without CUDA")


@CPU_ONLY
def test_gpu_recipe_on_a_cpu_machine_is_one_line_naming_the_option(tmp_path):
    """registration/options.py: the paper recipe (gpu_ranks [0]) and -gpu 0, refused
    before any data or model is read (the files named do not exist)."""
    (tmp_path / "run" / "dailydialog").mkdir(parents=True)  # for the recipe's log_file
    train = subprocess.run([os.path.join(BIN, "onmt_train"), "-config",
                            os.path.join(REPO, "examples", "dailydialog", "mirror.yaml")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert train.returncode == 1 and "Traceback" not in train.stderr
    assert train.stderr.strip().splitlines()[-1].startswith(
        "onmt_mirror: error: -gpu_ranks 0 needs 1 CUDA GPU, but torch ")
    assert train.stderr.strip().endswith(
        ": to run on the CPU, give -gpu_ranks with no value (and -world_size 1)")
    decode = subprocess.run([os.path.join(BIN, "onmt_translate"), "-model", "none.pt",
                             "-src", "none.src", "-output", "p.txt", "-gpu", "0"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert decode.returncode == 1 and "Traceback" not in decode.stderr
    last = decode.stderr.strip().splitlines()[-1]
    assert last.startswith("onmt_mirror: error: -gpu 0 needs a CUDA GPU, but torch ")
    assert last.endswith(": to run on the CPU, use -gpu -1")
    assert not (tmp_path / "p.txt").exists()


def test_tensorboard_without_the_package_is_one_line(tmp_path):
    """registration/options.py: tensorboard: true without the package (hidden here)."""
    code = ("import sys; sys.modules['tensorboard'] = None; "
            "sys.argv = ['onmt_train', '-config', %r, '-log_file', 't.log', '-tensorboard']; "
            "from onmt.bin.train import main; main()"
            % os.path.join(REPO, "examples", "dailydialog", "cpu_smoke.yaml"))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        "onmt_mirror: error: -tensorboard needs the tensorboard package: pip install "
        "'onmt-mirror[tb]' (or pip install tensorboard), or set tensorboard: false")


def test_training_is_reported_at_step_1_then_every_report_every_steps():
    import time

    import onmt.utils
    from onmt.utils.report_manager import ReportMgr

    reported = []
    mgr = ReportMgr(report_every=50, start_time=time.time())
    mgr._report_training = lambda step, *args: reported.append(step)
    stats = onmt.utils.Statistics(loss=3.0, n_words=10, n_correct=2)
    kept = []
    for step in range(1, 101):
        out = mgr.report_training(step, 100, 1.0, None, stats)
        kept.append(out is stats)
    assert reported == [1, 50, 100]
    # a report starts new statistics; the steps between reports keep accumulating
    assert [i + 1 for i, k in enumerate(kept) if not k] == [1, 50, 100]


def test_validation_reads_in_the_training_process(tmp_path, monkeypatch):
    """With -num_workers the stock validation iterator spawned fresh workers for every
    validation; now it is the in-process one, with the same examples. Training keeps its
    workers. (That training's random draws stay the stock ones is
    test_stock_seq2seq_trains_identically_with_the_plugin's.)"""
    write_corpus(tmp_path)
    cfg = mirror_config(tmp_path, num_workers=2, valid_batch_size=3)
    cli(["onmt_build_vocab", "-config", cfg, "-n_sample", "-1"], tmp_path)
    monkeypatch.chdir(tmp_path)
    parser = ArgumentParser()
    train_opts(parser)
    opt = parser.parse_args(["-config", cfg])
    ArgumentParser.validate_train_opts(opt)
    _, vocabs, transforms_cls = _init_train(opt)
    build = onmt.train_single.build_dynamic_dataset_iter
    valid = build(opt, transforms_cls, vocabs, task=CorpusTask.VALID, device_id=-1)
    assert type(valid.batches) is DynamicDatasetIter and valid.batches.num_workers == 0
    assert opt.num_workers == 2
    train = build(opt, transforms_cls, vocabs, task=CorpusTask.TRAIN, device_id=-1)
    assert type(train) is not DynamicDatasetIter  # the stock loader with its workers
    stock = original(onmt.train_single, "build_dynamic_dataset_iter")(
        opt, transforms_cls, vocabs, task=CorpusTask.VALID, device_id=-1)

    def examples(it):
        return sorted(tuple(t for t in row if t != vocabs["src"]["<blank>"])
                      for batch, _ in it for row in batch["src"][:, :, 0].tolist())

    ours = examples(valid)
    assert len(ours) == len(DIALOGUES) and ours == examples(stock)
