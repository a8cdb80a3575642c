"""Shared fixtures: a tiny Mirror model and a batch laid out as OpenNMT-py gives it."""
import os
import pathlib

# One intra-op thread per process (this one and every CLI it starts), set before torch
# is imported. Tiny models gain nothing from more, and on a 2-core machine torch's default
# (one thread per core) makes concurrent processes spin against each other: the 300 steps
# of test_end_to_end took 94 s of wall time instead of 11 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The numerics, decided here for this process and every CLI it starts, before torch is
# imported: a few tests pin what a trained or shipped model decodes, and torch picks its
# CPU kernels (ATen's by capability, MKL's BLAS and oneDNN's by instruction set) from the
# processor, so AVX-512 and AVX2 machines decoded different words. These settings are
# the ones every x86 CPU runs; a value set outside (e.g. ATEN_CPU_CAPABILITY=avx2) wins.
os.environ.setdefault("ATEN_CPU_CAPABILITY", "default")
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "SSE41")

import pytest  # noqa: E402
import torch  # noqa: E402

import onmt  # noqa: E402, F401  (the .pth hook registers the plugin on this import)
from onmt_mirror.models.mirror import MirrorModel  # noqa: E402
from onmt_mirror.opts import MirrorConfig  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
PAD, BOS, EOS, QUERY = 1, 2, 3, 4


def tiny_config(**overrides):
    kwargs = dict(vocab_size=40, pad_id=PAD, bos_id=BOS, eos_id=EOS, query_id=QUERY,
                  emb_size=12, hidden_size=16, enc_layers=2, dec_layers=2, z_size=6,
                  dropout=0.0, input_feed=False, kl_anneal_steps=0)
    kwargs.update(overrides)
    return MirrorConfig(**kwargs)


def make_batch(seed=0, batch=5):
    """src = c ｟mirror_query｠ x padded, tgt = <s> y </s> padded, as (B, L, 1)."""
    g = torch.Generator().manual_seed(seed)
    srcs, tgts = [], []
    for _ in range(batch):
        c = torch.randint(5, 40, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g)
        x = torch.randint(5, 40, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g)
        y = torch.randint(5, 40, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g)
        srcs.append(torch.cat([c, torch.tensor([QUERY]), x]))
        tgts.append(torch.cat([torch.tensor([BOS]), y, torch.tensor([EOS])]))
    pad = torch.nn.utils.rnn.pad_sequence
    src = pad(srcs, batch_first=True, padding_value=PAD)[:, :, None]
    tgt = pad(tgts, batch_first=True, padding_value=PAD)[:, :, None]
    src_len = torch.tensor([len(s) for s in srcs])
    return src, tgt, src_len


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = MirrorModel(tiny_config())
    for p in m.parameters():
        torch.nn.init.uniform_(p, -0.3, 0.3)
    return m


@pytest.fixture(scope="session")
def stock_runs(tmp_path_factory):
    """cli_util's tiny stock seq2seq trained by the stock CLIs, 12 steps with a validation
    every 6, with the plugin off ("1") and on ("0"): {ONMT_MIRROR_DISABLE: folder}.
    Trained once per session: test_reliability_onmt_suite compares the two runs, and
    test_registration needs a stock checkpoint."""
    from cli_util import cli, stock_config

    runs = {}
    for disable in ("1", "0"):
        work = tmp_path_factory.mktemp("stock_off" if disable == "1" else "stock_on")
        cfg = stock_config(work, train_steps=12, save_checkpoint_steps=12, valid_steps=6)
        env = {"ONMT_MIRROR_DISABLE": disable}
        cli(["onmt_build_vocab", "-config", cfg, "-n_sample", "-1"], work, env)
        cli(["onmt_train", "-config", cfg], work, env)
        runs[disable] = work
    return runs
