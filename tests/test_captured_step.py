"""Mirror's own training step (onmt_mirror/training/): length buckets, the padded batch's
terms, and the step itself against the stock Trainer's, on the CPU (the step's code run
eagerly) and, on a GPU, replayed from CUDA graphs."""
import types

import onmt.trainer
import pytest
import torch
from onmt.utils.optimizers import Optimizer

from conftest import EOS, PAD, make_batch, tiny_config
from onmt_mirror.errors import MirrorError
from onmt_mirror.losses.mirror_loss import MirrorLoss, MirrorStatistics
from onmt_mirror.models import mirror
from onmt_mirror.models.mirror import MirrorModel
from onmt_mirror.modules import streams
from onmt_mirror.modules.rnn_encoder import RNNEncoder
from onmt_mirror.registration.patching import original
from onmt_mirror.registration.training import captured_accumulation, eager_reason
from onmt_mirror.training import buckets
from onmt_mirror.training.captured_step import CapturedStep

CONFIGS = {"mirror": dict(bow_weight=1.0, free_bits=0.05),
           "cvae": dict(decoders=("y_cxz",), prior="cx", bow_weight=0.5),
           "shared": dict(share_dec_embeddings=True, share_generators=True,
                          kl_anneal_steps=4)}


def build(name="mirror", seed=0, device="cpu", **overrides):
    torch.manual_seed(seed)
    model = MirrorModel(tiny_config(**{**CONFIGS[name], **overrides})).to(device)
    for p in model.parameters():
        torch.nn.init.uniform_(p, -0.3, 0.3)
    cfg = model.cfg
    loss = MirrorLoss(cfg.decoders, cfg.backward_weight, PAD, cfg.bow_weight).to(device)
    return model.train(), loss


def test_capacity_and_width_ladders():
    assert [buckets.width(n) for n in (1, 8, 9, 45, 49, 100, 101, 129, 161)] == [
        4, 8, 12, 48, 56, 100, 128, 160, 192]
    caps = [buckets.capacity(n) for n in range(1, 5000)]
    assert caps == sorted(caps) and all(c >= n for n, c in enumerate(caps, 1))
    assert all(c <= max(64, 1.5 * n + 64) for n, c in enumerate(caps, 1))
    assert sorted(set(caps)) == [64, 128, 192, 320, 512, 768, 1152, 1728, 2624, 3968, 5952]


def test_bucket_holds_the_batch_and_indexes_its_gold_tokens():
    src, tgt, src_len = make_batch(2, batch=6)
    cfg = tiny_config()
    key, flat, counts = buckets.bucket(src[:, :, 0], tgt[:, :, 0], src_len, cfg)
    b = buckets.unflatten(key, flat)
    assert key[:4] == (6, 8, 8, 8) and b.x.shape == (6, 8) and b.y_gold.shape == (6, 9)
    for side in "xy":
        gold, index = getattr(b, side + "_gold"), getattr(b, "index_" + side)
        lengths = getattr(b, side + "_len")
        n = int(b.n_index["xy".index(side)])
        assert n == int(lengths.sum() + 6) == counts["n_" + side]
        picked = gold.reshape(-1)[index[:n]]
        assert int(picked.eq(EOS).sum()) == 6 and not picked.eq(PAD).any()
        assert b.gold_weight(side).tolist() == [1.0] * n + [0.0] * (index.numel() - n)
    assert counts["n_src_words"] == int(src_len.sum())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bucketed_terms_equal_the_eager_forward(name):
    """Padding to the bucket, the closed-form encoder states and the weighted capacity
    rows change no term (fp32, same z sample)."""
    model, _ = build(name)
    src, tgt, src_len = make_batch(3, batch=7)
    torch.manual_seed(5)
    eager = model(src, tgt, src_len)[1]["mirror"]
    model.kl_annealing.step -= 1
    key, flat, counts = buckets.bucket(src[:, :, 0], tgt[:, :, 0], src_len, model.cfg)
    torch.manual_seed(5)
    padded, _ = model.training_terms(buckets.unflatten(key, flat))
    assert set(padded) | {"n_sents", "n_x", "n_y"} == set(eager)
    for k, v in padded.items():
        torch.testing.assert_close(torch.as_tensor(v).float(),
                                   torch.as_tensor(eager[k]).float(), rtol=1e-5, atol=1e-5)
    assert {k: eager[k] for k in counts if k in eager} == {
        k: v for k, v in counts.items() if k != "n_src_words"}


def test_padded_encoder_equals_the_packed_one_with_gradients():
    torch.manual_seed(0)
    enc = RNNEncoder(5, 8, 2, 0.0, False)
    emb = torch.randn(4, 7, 5, requires_grad=True)
    lengths = torch.tensor([7, 3, 1, 5])
    results = []
    for pack in (True, False):
        out, vec = enc(emb, lengths, pack)
        (out.sin().sum() + vec.cos().sum()).backward()
        grads = [emb.grad.clone()] + [p.grad.clone() for p in enc.parameters()]
        emb.grad = None
        enc.zero_grad()
        results.append([out, vec] + grads)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(MirrorError, match="packing"):
        RNNEncoder(5, 8, 1, 0.0, True)(emb, lengths, False)


def fake_trainer(model, loss, optim, accum_count=1):
    """What the stock Trainer._gradient_accumulation and captured_accumulation read."""
    return types.SimpleNamespace(model=model, train_loss=loss, optim=optim,
                                 accum_count=accum_count, trunc_size=0,
                                 zero_out_prompt_loss=False, with_align=False, n_gpu=1,
                                 parallel_mode="data_parallel")


def assert_same_weights(ours, stock, rtol, atol):
    """Every weight and buffer of two models alike; a mismatch names it and its values."""
    for (k, a), b in zip(stock.state_dict().items(), ours.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=rtol, atol=atol, msg=lambda m, k=k: k + ": " + m)


def train(captured, name, steps, accum_count=1, device="cpu", graphs=False, sgd=False):
    """`steps` optimizer steps through the stock step or the captured one (same seeds):
    Adam with clipping, or plain SGD (which, unlike Adam, sees the loss's scale).
    Batches of 5 and 6 triples alternate: two bucket keys, each met again.

    Adam's eps is 1e-3: with the default 1e-8 a weight whose gradient is near 0 moves by
    about lr * sign(gradient), so fp32 rounding (packed and padded cuDNN calls sum in
    different orders) flips whole steps: gradient noise of 1e-9 put weights 80x past the
    tolerance below. With 1e-3 such steps are proportional to the gradient."""
    model, loss = build(name, device=device)
    if sgd:
        torch_optim, clip = torch.optim.SGD(model.parameters(), lr=0.05), 0.0
    else:
        torch_optim, clip = torch.optim.Adam(model.parameters(), lr=0.01, eps=1e-3), 1.0
    optim = Optimizer(torch_optim, 0.05 if sgd else 0.01, max_grad_norm=clip)
    trainer = fake_trainer(model, loss, optim, accum_count)
    if captured:
        step = CapturedStep(model, loss.total, torch_optim, None, clip, False, graphs=graphs)
    total = MirrorStatistics()
    for i in range(steps):
        batches = [{k: v.to(device) for k, v in zip(("src", "tgt", "srclen"),
                                                      make_batch(10 * i + j, 5 + i % 2))}
                   for j in range(accum_count)]
        norm = float(sum(b["src"].size(0) for b in batches))
        torch.manual_seed(100 + i)
        if captured:
            captured_accumulation(trainer, step, batches, norm, total, MirrorStatistics())
        else:
            original(onmt.trainer.Trainer, "_gradient_accumulation")(
                trainer, batches, norm, total, MirrorStatistics())
    return model, optim, total


@pytest.mark.parametrize("name,accum_count,sgd", [
    ("mirror", 1, False), ("mirror", 2, False), ("mirror", 2, True), ("cvae", 1, True),
    ("shared", 2, False)])
def test_captured_step_trains_like_the_stock_step(name, accum_count, sgd):
    """Weights, the step counter and every statistic after three steps."""
    stock, stock_optim, stock_stats = train(False, name, 3, accum_count, sgd=sgd)
    ours, our_optim, our_stats = train(True, name, 3, accum_count, sgd=sgd)
    assert our_optim.training_step == stock_optim.training_step == 4
    assert_same_weights(ours, stock, rtol=1e-4, atol=1e-5)
    assert stock.kl_annealing.step.item() == ours.kl_annealing.step.item() == 3 * accum_count
    assert (our_stats.n_words, our_stats.n_correct, our_stats.n_src_words) == (
        stock_stats.n_words, stock_stats.n_correct, stock_stats.n_src_words)
    assert our_stats.loss == pytest.approx(stock_stats.loss, rel=1e-5)
    assert set(our_stats.terms) == set(stock_stats.terms)
    for k, v in stock_stats.terms.items():
        assert our_stats.terms[k] == pytest.approx(v, rel=1e-4), k


def poison_kl(model):
    terms_of = model.training_terms

    def poisoned(*args, **kwargs):
        terms, parts = terms_of(*args, **kwargs)
        terms["kl"] = terms["kl"] * float("inf")
        return terms, parts

    model.training_terms = poisoned


def test_non_finite_term_stops_before_any_weight_changes():
    model, loss = build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    step = CapturedStep(model, loss.total, adam, None, 1.0, False, graphs=False)
    poison_kl(model)
    trainer = fake_trainer(model, loss, Optimizer(adam, 0.01, max_grad_norm=1.0))
    src, tgt, src_len = make_batch(0)
    with pytest.raises(MirrorError, match="non-finite loss term.*kl=inf"):
        captured_accumulation(trainer, step, [{"src": src, "tgt": tgt, "srclen": src_len}],
                              5.0, MirrorStatistics(), MirrorStatistics())
    for k, v in model.state_dict().items():
        if k != "kl_annealing.step":
            assert torch.equal(v, before[k]), k
    assert not adam.state


def test_skipped_batch_leaves_weights_and_adam_alone():
    model, loss = build()
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    optim = Optimizer(adam, 0.01, max_grad_norm=1.0)
    step = CapturedStep(model, loss.total, adam, None, 1.0, False, graphs=False)
    loss.nonfinite = "skip"
    before = [p.detach().clone() for p in model.parameters()]
    poison_kl(model)
    src, tgt, src_len = make_batch(0)
    stats = MirrorStatistics()
    captured_accumulation(fake_trainer(model, loss, optim), step,
                          [{"src": src, "tgt": tgt, "srclen": src_len}], 5.0, stats,
                          MirrorStatistics())
    assert optim.training_step == 2 and not adam.state and stats.n_words == 0
    assert stats.n_src_words == int(src_len.sum())
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b) and not p.grad.any()


def test_eager_reason_names_what_cannot_be_captured():
    model, _ = build()
    opt = types.SimpleNamespace(mirror_captured_step="auto", optim="adam",
                                model_dtype="fp16", batch_type="sents", batch_size=128)
    trainer = types.SimpleNamespace(n_gpu=1, trunc_size=0,
                                    optim=types.SimpleNamespace(_fp16="amp"))
    assert eager_reason(opt, model, trainer) == "not on a GPU"
    on_gpu = types.SimpleNamespace(is_cuda=True)
    model.parameters = lambda: iter([on_gpu])  # the rest is read from cfg and options
    assert eager_reason(opt, model, trainer) == ""
    opt.batch_size = 512
    assert "at most 256 sentences" in eager_reason(opt, model, trainer)
    opt.mirror_captured_step = "on"
    assert eager_reason(opt, model, trainer) == ""
    model.cfg.input_feed = True
    assert "-input_feed 1" in eager_reason(opt, model, trainer)
    model.cfg.input_feed = False
    opt.optim = "sgd"
    assert eager_reason(opt, model, trainer) == "-optim sgd, -model_dtype fp16"
    opt.mirror_captured_step = "off"
    assert eager_reason(opt, model, trainer) == "-mirror_captured_step off"


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


@pytest.fixture
def exact(monkeypatch):
    """fp32 without TF32, and z = the posterior mean: the CUDA generator's offsets under
    graph replay are not the eager ones, so a sampled z would differ by design."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(mirror, "reparameterize", lambda mu, logvar, gen=None:
                        mu + 0.0 * logvar)


@cuda
@pytest.mark.parametrize("accum_count", [1, 2])
def test_graph_replay_trains_like_the_stock_step(exact, accum_count):
    """Six steps, two bucket keys each seen several times (capture, then replays)."""
    stock, stock_optim, stock_stats = train(False, "mirror", 6, accum_count, device="cuda")
    ours, our_optim, our_stats = train(True, "mirror", 6, accum_count, device="cuda",
                                       graphs=True)
    assert our_stats.loss == pytest.approx(stock_stats.loss, rel=1e-5)
    assert our_stats.n_correct == stock_stats.n_correct
    assert_same_weights(ours, stock, rtol=1e-4, atol=1e-5)


@cuda
def test_fp16_graph_replay_follows_the_stock_amp_step(exact):
    """fp16 autocast and the stock GradScaler: the captured step's statistics and weights
    stay within fp16 rounding of the stock step's (z = the mean, so no sample decides)."""
    runs = []
    for captured in (False, True):
        model, loss = build("mirror", device="cuda")
        adam = torch.optim.Adam(model.parameters(), lr=0.01, fused=True)
        optim = Optimizer(adam, 0.01, max_grad_norm=1.0)
        optim._fp16, optim._scaler = "amp", torch.amp.GradScaler("cuda")
        trainer = fake_trainer(model, loss, optim)
        step = CapturedStep(model, loss.total, adam, optim._scaler, 1.0, True)
        stats, keys = MirrorStatistics(), set()
        for i in range(6):
            batch = dict(zip(("src", "tgt", "srclen"),
                             (t.cuda() for t in make_batch(i, 5 + i % 2))))
            keys.add(buckets.bucket_batch(batch, model.cfg)[0])
            torch.manual_seed(100 + i)
            if captured:
                captured_accumulation(trainer, step, [batch], 5.0 + i % 2, stats,
                                      MirrorStatistics())
            else:
                original(onmt.trainer.Trainer, "_gradient_accumulation")(
                    trainer, [batch], 5.0 + i % 2, stats, MirrorStatistics())
        runs.append((model, stats, len(step.forward_graphs), len(keys)))
    (stock, stock_stats, _, _), (ours, our_stats, graphs, keys) = runs
    assert graphs == keys < 6  # one graph a key, and some batches replayed one
    assert our_stats.loss == pytest.approx(stock_stats.loss, rel=2e-2)
    assert_same_weights(ours, stock, rtol=0, atol=0.05)


@cuda
def test_side_streams_change_no_gradient(exact, monkeypatch):
    """The encoders and decoders on their own streams (modules/streams.py) give the
    gradients of the same step run on one stream."""
    runs = []
    for enabled in (False, True):
        monkeypatch.setattr(streams.in_parallel, "enabled", enabled)
        model, loss = build("mirror", device="cuda")
        src, tgt, src_len = (t.cuda() for t in make_batch(4, batch=7))
        loss.total(model(src, tgt, src_len)[1]["mirror"]).backward()
        runs.append([p.grad for p in model.parameters()])
    assert streams._side_streams  # the second run did fork
    for a, b in zip(*runs):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
