"""The latent remedies and diagnostics, each against its formula (docs/latent.md)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Independent, Normal, kl_divergence

from cli_util import cli, mirror_config, write_corpus
from conftest import PAD, make_batch
from onmt_mirror.losses.mirror_loss import MirrorLoss, MirrorStatistics
from onmt_mirror.models.mirror import KLAnnealing
from onmt_mirror.modules.gaussian import free_bits_kl, gaussian_kl_dims, mutual_information
from test_mirror_model import decoder_nll, parts, tiny_model

UNK = 0  # tiny_config's vocabulary: <unk> first


def run_loss(model, batch_seed=4, **loss_kwargs):
    src, tgt, src_len = make_batch(seed=batch_seed)
    with torch.no_grad():
        out, attns = model(src, tgt, src_len)
        loss, stats = MirrorLoss(model.cfg.decoders, 1.0, PAD, model.cfg.bow_weight,
                                 **loss_kwargs).train(model.training)(None, out, attns)
        p = parts(model, src, tgt, src_len)
    return loss, stats, attns["mirror"], p, (src, tgt, src_len)


def bow_nll(head, cond, tokens):
    logp = F.log_softmax(head.mlp(cond), -1)
    return -sum(logp[i, t] for i, row in enumerate(tokens.tolist()) for t in row
                if t != PAD)


def test_all_remedies_off_add_no_parameters_and_no_terms():
    model = tiny_model()
    assert not [n for n in model.state_dict() if n.startswith("bow_")]
    _, _, terms, _, _ = run_loss(model)
    assert not [k for k in terms if "bow" in k or k == "kl_loss"]


@pytest.mark.parametrize("decoders, prior, sides", [
    (("y_cxz", "x_cz", "x_cyz", "y_cz"), "c", "xy"),  # Mirror: both sides
    (("y_cxz",), "cx", "y"),  # the CVAE: y only, from [z; c; x]
])
def test_bag_of_words_loss_is_added_with_its_weight(decoders, prior, sides):
    model = tiny_model(bow_weight=0.3, decoders=decoders, prior=prior)
    assert model.bow_sides() == sides
    loss, _, terms, p, (src, tgt, src_len) = run_loss(model)
    enc = model.encode_dialogue(src[:, :, 0], src_len)
    with torch.no_grad():
        cond = torch.cat([p["z"], model.prior_input(enc)], -1)
        tokens = {"x": enc["x"].tokens, "y": tgt[:, 1:, 0].masked_fill(tgt[:, 1:, 0] == 3, PAD)}
        expected = {s: bow_nll(getattr(model, "bow_" + s), cond, tokens[s]) for s in sides}
        base = MirrorLoss(decoders, 1.0, PAD)(None, None, {"mirror": {
            k: v for k, v in terms.items() if "bow" not in k}})[0]
    for s in sides:
        torch.testing.assert_close(terms["nll_bow_" + s], expected[s], rtol=1e-5,
                                   atol=1e-4)
    torch.testing.assert_close(loss, base + 0.3 * sum(expected.values()), rtol=1e-5,
                               atol=1e-4)


def test_bag_of_words_sides_can_be_chosen():
    assert tiny_model(bow_weight=1.0, bow_sides="y").bow_sides() == "y"
    assert tiny_model(bow_weight=0.0, bow_sides="xy").bow_sides() == ""


def test_free_bits_formulas():
    g = torch.Generator().manual_seed(1)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(4, 3, generator=g) for _ in range(4))
    dims = kl_divergence(Normal(mu_q, (0.5 * lv_q).exp()), Normal(mu_p, (0.5 * lv_p).exp()))
    torch.testing.assert_close(gaussian_kl_dims(mu_q, lv_q, mu_p, lv_p), dims)
    per_sentence = dims.sum(-1)
    target = float(per_sentence.median())
    torch.testing.assert_close(free_bits_kl(dims, target, "sentence"),
                               torch.maximum(per_sentence, torch.tensor(target)).sum())
    per_dim = dims.mean(0)
    target = float(per_dim.median())
    torch.testing.assert_close(free_bits_kl(dims, target, "dim"),
                               4 * torch.maximum(per_dim, torch.tensor(target)).sum())


def test_free_bits_replace_the_kl_in_the_loss_not_in_the_log():
    model = tiny_model(free_bits=1e6, kl_weight=0.5)
    loss, stats, terms, p, _ = run_loss(model)
    assert float(terms["kl_loss"]) == pytest.approx(5 * 1e6)  # 5 sentences at the target
    torch.testing.assert_close(terms["kl"], p["kl"], rtol=1e-5, atol=1e-5)  # the true KL
    plain = MirrorLoss(model.cfg.decoders, 1.0, PAD)(None, None, {"mirror": dict(
        terms, kl_loss=terms["kl"])})[0]
    torch.testing.assert_close(loss - plain, 0.5 * (5e6 - terms["kl"]), rtol=1e-6, atol=1.0)
    assert stats.mirror_summary()["kl"] == pytest.approx(float(p["kl"]) / 5, rel=1e-5)


def test_free_bits_stop_the_kl_gradient_below_the_target():
    model = tiny_model(free_bits=1e6, decoders=("y_cxz",), dropout=0.0)
    model.train()
    src, tgt, src_len = make_batch(seed=4)
    attns = model(src, tgt, src_len)[1]
    attns["mirror"]["kl_loss"].backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_cyclical_annealing_repeats_the_ramp_then_holds():
    ann = KLAnnealing(steps=4, weight=0.8, cycles=2, ratio=0.5)
    weights = []
    for _ in range(10):
        weights.append(float(ann()))
        ann.step += 1
    assert weights == pytest.approx([0.0, 0.4, 0.8, 0.8, 0.0, 0.4, 0.8, 0.8, 0.8, 0.8])


def test_word_dropout_replaces_teacher_forced_words_in_training_only():
    model = tiny_model(word_dropout=1.0, unk_id=UNK)
    dec_in = torch.tensor([[2, 7, 8, 9], [2, 10, PAD, PAD]])
    assert torch.equal(model.word_dropout(dec_in), dec_in)  # eval: untouched
    model.train()
    assert model.word_dropout(dec_in).tolist() == [[2, UNK, UNK, UNK], [2, UNK, PAD, PAD]]
    seen = []
    run = model.run_decoder
    model.run_decoder = lambda name, dec_in, *a, **k: seen.append(dec_in) or run(
        name, dec_in, *a, **k)
    src, tgt, src_len = make_batch(seed=4)
    model(src, tgt, src_len)
    assert len(seen) == 4
    for d in seen:  # every decoder's input: <s>, then only <unk> and padding
        assert (d[:, 0] == 2).all() and set(d[:, 1:].unique().tolist()) <= {UNK, PAD}
    torch.manual_seed(5)
    half = tiny_model(word_dropout=0.5, unk_id=UNK).train()
    dropped = half.word_dropout(torch.full((200, 50), 9)) == UNK
    assert 0.45 < dropped[:, 1:].float().mean() < 0.55


def test_mutual_information_matches_its_definition():
    g = torch.Generator().manual_seed(2)
    mean, logvar = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    mi = mutual_information(mean, logvar, torch.Generator().manual_seed(7))
    eps = torch.randn(6, 3, generator=torch.Generator().manual_seed(7))
    z = mean + (0.5 * logvar).exp() * eps
    q = Independent(Normal(mean, (0.5 * logvar).exp()), 1)
    own = q.log_prob(z)
    agg = torch.stack([q.log_prob(z[i].expand(6, 3)).logsumexp(0) - math.log(6)
                       for i in range(6)])
    torch.testing.assert_close(mi, (own - agg).mean())
    assert float(mi) <= math.log(6) + 1e-5


def test_validation_reports_active_units_mi_and_the_iw_bound():
    model = tiny_model(iw_samples=3, decoders=("y_cxz",), prior="cx")
    with torch.no_grad():  # spread the posterior means so that some units count as active
        model.posterior_net.mean.weight.mul_(torch.linspace(0, 30, 6)[:, None])
    src, tgt, src_len = make_batch(seed=4)
    stats = MirrorStatistics()
    mus, mis = [], []
    for seed in (4, 5):
        _, batch_stats, terms, p, (src, tgt, src_len) = run_loss(model, seed)
        stats.update(batch_stats)
        mus.append(p["z"])
        # the IW bound, recomputed with the same generator stream
        enc = model.encode_dialogue(src[:, :, 0], src_len)
        with torch.no_grad():
            mu_q, lv_q = model.posterior_net(torch.cat(
                [p["vecs"]["c"], p["vecs"]["x"], p["vecs"]["y"]], -1))
            mu_p, lv_p = model.prior(enc)
            mis.append(5 * mutual_information(mu_q, lv_q, torch.Generator().manual_seed(0)))
            gen = torch.Generator().manual_seed(0)
            torch.randn(mu_q.shape, generator=gen)  # the MI estimate's draw comes first
            q = Independent(Normal(mu_q, (0.5 * lv_q).exp()), 1)
            prior = Independent(Normal(mu_p, (0.5 * lv_p).exp()), 1)
            log_w = []
            for _ in range(3):
                z = mu_q + (0.5 * lv_q).exp() * torch.randn(mu_q.shape, generator=gen)
                nll = torch.stack([decoder_nll(
                    model, "y_cxz", p["y"][0][i:i + 1], p["y"][1][i:i + 1], z[i:i + 1],
                    {k: v[i:i + 1] for k, v in p["vecs"].items()},
                    {k: (m[i:i + 1], mk[i:i + 1]) for k, (m, mk) in p["memories"].items()})
                    for i in range(5)])
                log_w.append(-nll + prior.log_prob(z) - q.log_prob(z))
            iw = -(torch.stack(log_w).logsumexp(0) - math.log(3)).sum()
        torch.testing.assert_close(terms["iw_nll"], iw, rtol=1e-4, atol=1e-3)
    summary = stats.mirror_summary()
    mu = torch.cat(mus)
    assert summary["active_units"] == int((mu.var(0, unbiased=False) > 0.01).sum())
    assert 0 < summary["active_units"] < 6
    assert summary["mi"] == pytest.approx(float(sum(mis)) / 10, rel=1e-5)
    assert summary["iw_nll"] > 0 and summary["ppl_iw"] > 1


def test_selection_decides_what_the_validation_perplexity_measures():
    model = tiny_model()
    got = {}
    for select in ("posterior", "prior", "elbo"):
        _, stats, terms, _, _ = run_loss(model, select=select)
        got[select] = stats.loss
    assert got["posterior"] == pytest.approx(float(terms["nll_y_cxz"]), rel=1e-6)
    assert got["prior"] == pytest.approx(float(terms["nll_y_cxz_prior"]), rel=1e-6)
    assert got["elbo"] == pytest.approx(float(terms["nll_y_cxz"] + terms["kl"]), rel=1e-6)
    loss = MirrorLoss(model.cfg.decoders, 1.0, PAD, select="prior").train()
    model.train()
    src, tgt, src_len = make_batch(seed=4)
    out, attns = model(src, tgt, src_len)
    _, stats = loss(None, out, attns)
    assert stats.loss == pytest.approx(float(attns["mirror"]["nll_y_cxz"].detach()), rel=1e-6)


def test_collapse_warning_uses_a_moving_mean(monkeypatch):
    import onmt_mirror.losses.mirror_loss as ml

    warned = []
    monkeypatch.setattr(ml.logger, "warning", lambda msg, *a: warned.append(msg % a))
    loss = MirrorLoss(("y_cxz",), 1.0, PAD)
    loss.kl_collapse_threshold, loss.kl_collapse_steps = 0.1, 4
    # a streak count would restart at every 0.15 and never warn
    for kl in [0.05, 0.15, 0.05, 0.05, 0.14, 0.0, 0.05, 0.05]:
        loss.watch_kl(kl)
    assert len(warned) == 1 and "averaged 0.075 over the last 4 training" in warned[0]
    for kl in [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]:  # rises above, then collapses again
        loss.watch_kl(kl)
    assert len(warned) == 2
    loss.check_validation_kl({"kl": 0.02}, 50)
    loss.check_validation_kl({"kl": 0.2}, 100)
    assert warned[2].startswith("validation at step 50: KL collapse: KL(q||p) per "
                                "sentence is 0.02, under 0.1") and len(warned) == 3


def test_training_cli_logs_diagnostics_and_keeps_the_best_checkpoint(tmp_path):
    write_corpus(tmp_path)
    mirror_config(tmp_path, train_steps=6, valid_steps=2, save_checkpoint_steps=6,
                  mirror_bow_weight=1.0, mirror_free_bits=0.5, mirror_iw_samples=2,
                  mirror_word_dropout=0.1, mirror_kl_anneal_cycles=2,
                  mirror_kl_anneal_ratio=0.5, mirror_kl_anneal_steps=2,
                  mirror_select="prior", mirror_keep_best=True)
    cli(["onmt_build_vocab", "-config", "mirror.yaml", "-n_sample", "-1"], tmp_path)
    out = cli(["onmt_train", "-config", "mirror.yaml"], tmp_path)
    valid = [ln for ln in out.stderr.splitlines() if "Mirror validation;" in ln]
    assert len(valid) == 3
    for ln in valid:
        for key in ("ppl_y_cxz_prior", "kl", "active_units", "mi", "iw_nll", "ppl_iw",
                    "ppl_bow_x", "ppl_bow_y"):
            assert " %s: " % key in ln, ln
    prior_ppl = [float(ln.split("ppl_y_cxz_prior: ")[1].split(";")[0]) for ln in valid]
    stock = [float(ln.split("Validation perplexity: ")[1]) for ln in out.stderr.splitlines()
             if "Validation perplexity: " in ln]
    assert stock == pytest.approx(prior_ppl, rel=1e-3)  # -mirror_select prior
    best_step = 2 * (1 + min(range(3), key=lambda i: prior_ppl[i]))
    assert sorted(p.name for p in (tmp_path / "run").glob("model_best_step_*.pt")) == [
        "model_best_step_%d.pt" % best_step]
    ckpt = torch.load(tmp_path / ("run/model_best_step_%d.pt" % best_step),
                      weights_only=True)
    assert "bow_x.mlp.0.weight" in ckpt["model"] and "weight" in ckpt["generator"]
