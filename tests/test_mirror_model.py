"""MirrorModel: KL, Eq. 6, conditioning of each decoder, gradients, noise, src split."""
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from conftest import EOS, PAD, QUERY, make_batch, tiny_config
from onmt_mirror.losses.mirror_loss import MirrorLoss
from onmt_mirror.models.mirror import MirrorModel
from onmt_mirror.modules.gaussian import gaussian_kl, reparameterize
from onmt_mirror.modules.src_field import split_src


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(3)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(7, 5, generator=g) for _ in range(4))
    expected = kl_divergence(Normal(mu_q, (0.5 * lv_q).exp()),
                             Normal(mu_p, (0.5 * lv_p).exp())).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu_q, lv_q, mu_p, lv_p), expected)


def test_reparameterisation_noise_is_standard_normal():
    torch.manual_seed(0)
    z = reparameterize(torch.zeros(200000, 2), torch.zeros(200000, 2))
    assert abs(z.mean().item()) < 0.01
    assert abs(z.var().item() - 1.0) < 0.01
    assert (z < 0).float().mean().item() == pytest.approx(0.5, abs=0.01)  # not U[0,1)


def test_split_src_recovers_context_and_query():
    src = torch.tensor([[7, 8, QUERY, 9, 10, 11], [12, QUERY, 13, PAD, PAD, PAD]])
    c, c_len, x, x_len, host = split_src(src, torch.tensor([6, 3]), QUERY, PAD)
    assert c.tolist() == [[7, 8], [12, PAD]] and c_len.tolist() == [2, 1]
    assert x.tolist() == [[9, 10, 11], [13, PAD, PAD]] and x_len.tolist() == [3, 1]
    assert host.tolist() == [[2, 1], [3, 1]] and host.device.type == "cpu"


def test_logvar_is_softly_bounded():
    from onmt_mirror.models.mirror import GaussianNet

    net = GaussianNet(4, 8, 3)
    torch.nn.init.constant_(net.logvar.weight, 50.0)
    _, logvar = net(torch.ones(2, 4))
    assert logvar.max().item() <= GaussianNet.LOGVAR_BOUND  # tanh saturates in fp32
    assert logvar.max().item() > GaussianNet.LOGVAR_BOUND - 1e-3
    net = GaussianNet(4, 8, 3)
    raw = net.logvar(net.hidden(torch.ones(2, 4)))
    torch.testing.assert_close(net(torch.ones(2, 4))[1], raw, rtol=5e-3, atol=1e-4)  # ~x-x^3/300


def decoder_nll(model, name, dec_in, gold, z, vecs, memories):
    """One decoder's summed token NLL, computed independently of MirrorModel.nll."""
    out, _ = model.run_decoder(name, dec_in, z, vecs, memories)
    logp = F.log_softmax(model.readout(name)(out), -1)
    tok = logp.gather(-1, gold[..., None])[..., 0]
    return -(tok * gold.ne(PAD)).sum()


def parts(model, src, tgt, src_len):
    """Re-derive z, vectors and memories exactly as forward() does in eval mode."""
    from onmt_mirror.modules.padding import lengths_to_mask

    src, tgt = src[:, :, 0], tgt[:, :, 0]
    enc = model.encode_dialogue(src, src_len)
    c, c_len, c_out, c_vec = enc["c"]
    x, x_len, x_out, x_vec = enc["x"]
    y = tgt[:, 1:].masked_fill(tgt[:, 1:].eq(EOS), PAD)
    y_len = y.ne(PAD).sum(1)
    y_out, y_vec = model.utterance_encoder(model.embed(y), y_len)
    vecs = {"c": c_vec, "x": x_vec, "y": y_vec}
    memories = {"c": (c_out, lengths_to_mask(c_len, c_out.size(1))),
                "x": (x_out, lengths_to_mask(x_len, x_out.size(1))),
                "y": (y_out, lengths_to_mask(y_len, y_out.size(1)))}
    mu_q, lv_q = model.posterior_net(torch.cat([c_vec, x_vec, y_vec], -1))
    mu_p, lv_p = model.prior(enc)
    x_in, x_gold = model.with_bos_eos(x, x_len)
    return dict(vecs=vecs, memories=memories, z=mu_q,
                kl=gaussian_kl(mu_q, lv_q, mu_p, lv_p).sum(),
                x=(x_in, x_gold), y=(tgt[:, :-1], tgt[:, 1:]))


@pytest.mark.parametrize("input_feed", [False, True])
def test_loss_equals_hand_assembled_eq6(input_feed):
    torch.manual_seed(1)
    model = MirrorModel(tiny_config(input_feed=input_feed, kl_weight=0.7,
                                    backward_weight=1.0))
    model.eval()
    src, tgt, src_len = make_batch(seed=4)
    with torch.no_grad():
        out, attns = model(src, tgt, src_len)
        loss, stats = MirrorLoss(model.cfg.decoders, 1.0, PAD)(None, out, attns)
        p = parts(model, src, tgt, src_len)
        nll = {name: decoder_nll(model, name, *p[side], p["z"], p["vecs"], p["memories"])
               for name, side in [("y_cxz", "y"), ("x_cz", "x"), ("x_cyz", "x"),
                                  ("y_cz", "y")]}
    expected = 0.5 * (nll["y_cxz"] + nll["x_cz"] + nll["x_cyz"] + nll["y_cz"]) \
        + 0.7 * p["kl"]
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-4)
    assert stats.n_sents == 5 and stats.n_words == int(tgt[:, 1:].ne(PAD).sum())
    assert stats.loss == pytest.approx(float(nll["y_cxz"]), rel=1e-5)


def test_cvae_configuration_is_eq1():
    """Only Dec1 and a prior on (c, x): loss = NLL(y|c,x,z) + KL(q || p(z|c,x))."""
    torch.manual_seed(2)
    model = MirrorModel(tiny_config(decoders=("y_cxz",), prior="cx"))
    assert not hasattr(model, "dec_x_cz") and model.prior_net.hidden[0].in_features == 32
    model.eval()
    src, tgt, src_len = make_batch(seed=5)
    with torch.no_grad():
        out, attns = model(src, tgt, src_len)
        loss, _ = MirrorLoss(model.cfg.decoders, 1.0, PAD)(None, out, attns)
        p = parts(model, src, tgt, src_len)
        nll = decoder_nll(model, "y_cxz", *p["y"], p["z"], p["vecs"], p["memories"])
    torch.testing.assert_close(loss, nll + p["kl"], rtol=1e-5, atol=1e-4)


def _decoder_out(model, name, src, tgt, src_len, z):
    p = parts(model, src, tgt, src_len)
    side = model.DECODERS[name][0]
    return model.run_decoder(name, p[side][0], z, p["vecs"], p["memories"])[0]


def tiny_model(**overrides):
    torch.manual_seed(0)
    m = MirrorModel(tiny_config(**overrides))
    for p in m.parameters():
        torch.nn.init.uniform_(p, -0.3, 0.3)
    return m.eval()


@pytest.mark.parametrize("input_feed", [False, True])
def test_each_decoder_sees_only_what_the_paper_says(input_feed):
    """Same z: Dec2 p(x|c,z) ignores y, Dec4 p(y|c,z) ignores x; Dec1 and Dec3 do not."""
    model = tiny_model(input_feed=input_feed)
    src, tgt, src_len = make_batch(seed=6)
    z = torch.randn(src.size(0), model.cfg.z_size)
    # new response words, same lengths (Dec4 and Dec1 are scored on the same targets)
    tgt2 = tgt.clone()
    body = (tgt2 > EOS)
    tgt2[body] = (tgt2[body] - 5 + 7) % 35 + 5
    # new query words after the marker, same lengths
    src2 = src.clone()
    after_q = (src2 == QUERY).int().cumsum(1).bool() & (src2 != QUERY) & (src2 != PAD)
    src2[after_q] = (src2[after_q] - 5 + 11) % 35 + 5
    with torch.no_grad():
        base = {n: _decoder_out(model, n, src, tgt, src_len, z) for n in model.cfg.decoders}
        new_y = {n: _decoder_out(model, n, src, tgt2, src_len, z) for n in ("x_cz", "x_cyz")}
        new_x = {n: _decoder_out(model, n, src2, tgt, src_len, z) for n in ("y_cz", "y_cxz")}
    torch.testing.assert_close(new_y["x_cz"], base["x_cz"])     # Dec2 does not see y
    torch.testing.assert_close(new_x["y_cz"], base["y_cz"])     # Dec4 does not see x
    assert (new_y["x_cyz"] - base["x_cyz"]).abs().max() > 1e-4  # Dec3 sees y
    assert (new_x["y_cxz"] - base["y_cxz"]).abs().max() > 1e-4  # Dec1 sees x


@pytest.mark.parametrize("overrides", [{}, {"input_feed": True},
                                       {"share_dec_embeddings": True,
                                        "share_generators": True, "bidirectional": True}])
def test_gradients_reach_every_parameter(overrides):
    torch.manual_seed(3)
    model = MirrorModel(tiny_config(dropout=0.1, kl_anneal_steps=0, **overrides))
    model.train()
    src, tgt, src_len = make_batch(seed=7)
    out, attns = model(src, tgt, src_len)
    loss, _ = MirrorLoss(model.cfg.decoders, 1.0, PAD)(None, out, attns)
    loss.backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_kl_annealing_is_linear_and_counts_training_batches():
    torch.manual_seed(4)
    model = MirrorModel(tiny_config(kl_anneal_steps=4, kl_weight=0.8))
    src, tgt, src_len = make_batch(seed=8)
    weights = []
    model.train()
    for _ in range(6):
        weights.append(model(src, tgt, src_len)[1]["mirror"]["kl_weight"])
    assert weights == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 0.8])
    model.eval()
    with torch.no_grad():
        model(src, tgt, src_len)
    assert int(model.kl_annealing.step) == 6  # validation does not advance it
    assert "kl_annealing.step" in model.state_dict()


def test_validation_reports_dec1_with_prior_z(model):
    model.eval()
    src, tgt, src_len = make_batch(seed=9)
    with torch.no_grad():
        terms = model(src, tgt, src_len)[1]["mirror"]
        p = parts(model, src, tgt, src_len)
        mu_p, _ = model.prior(model.encode_dialogue(src[:, :, 0], src_len))
        prior_nll = decoder_nll(model, "y_cxz", *p["y"], mu_p, p["vecs"], p["memories"])
    torch.testing.assert_close(terms["nll_y_cxz_prior"], prior_nll, rtol=1e-5, atol=1e-4)
    assert float(terms["nll_y_cxz_prior"]) != pytest.approx(float(terms["nll_y_cxz"]))


def test_missing_query_marker_is_a_clear_error(model):
    src, tgt, src_len = make_batch(seed=10)
    src = src.masked_fill(src == QUERY, 9)
    with pytest.raises(ValueError, match="mirror_triple"):
        model(src, tgt, src_len)


@pytest.mark.parametrize("input_feed", [False, True])
def test_decoding_interface_steps_like_teacher_forcing(input_feed):
    """Step-by-step decoding (beam search's calls) equals one teacher-forced pass."""
    model = tiny_model(input_feed=input_feed)
    src, tgt, src_len = make_batch(seed=11)
    with torch.no_grad():
        enc_out, final, mem_len = model.encoder(src, src_len)
        model.decoder.init_state(src, enc_out, final)
        steps = [model.decoder(tgt[:, t:t + 1], enc_out, src_len=mem_len, step=t)[0]
                 for t in range(tgt.size(1) - 1)]
        stepwise = torch.cat(steps, 1)
        model.decoder.init_state(src, enc_out, final)
        whole, _ = model.decoder(tgt[:, :-1], enc_out, src_len=mem_len)
    torch.testing.assert_close(stepwise, whole, rtol=1e-5, atol=1e-5)


def test_pack_plan_matches_pytorch_packing():
    """One gather / scatter packs exactly as pack_padded_sequence (the order cuDNN
    reads), and an LSTM over it gives the padded LSTM's outputs at real positions."""
    from torch.nn.utils.rnn import pack_padded_sequence

    from onmt_mirror.modules.padding import PackPlan

    torch.manual_seed(0)
    lengths = torch.tensor([3, 5, 1, 5, 2])
    padded = torch.randn(5, 6, 4)
    plan = PackPlan(lengths, 6, padded.device)
    ref = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
    ours = plan.pack(padded)
    assert ours.batch_sizes.tolist() == ref.batch_sizes.tolist() == [5, 4, 3, 2, 2]
    torch.testing.assert_close(ours.data, ref.data, rtol=0, atol=0)
    real = torch.arange(6)[None, :] < lengths[:, None]
    torch.testing.assert_close(plan.unpack(ours.data), padded * real[..., None])
    lstm = torch.nn.LSTM(4, 3, 2, batch_first=True)
    h0 = (torch.randn(2, 5, 3), torch.randn(2, 5, 3))
    packed_out, (hn, _) = lstm(ours, h0)
    full, _ = lstm(padded, h0)
    torch.testing.assert_close(plan.unpack(packed_out.data)[real], full[real])
    torch.testing.assert_close(hn[-1], full[torch.arange(5), lengths - 1])


def test_one_step_cells_equal_the_lstm():
    """Beam search's single steps (AttnDecoder.one_step, fused cells) give what the
    decoder's nn.LSTM gives for the same step, state included."""
    from onmt_mirror.models.mirror import AttnDecoder

    torch.manual_seed(0)
    dec = AttnDecoder(6, 3, 8, 2, 0.3, False, "general", 8).eval()
    inp = torch.randn(4, 1, 9)
    state = (torch.randn(2, 4, 8), torch.randn(2, 4, 8))
    ref_out, (ref_h, ref_c) = dec.lstm(inp, state)
    out, (h, c) = dec.one_step(inp, state)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(h, ref_h)
    torch.testing.assert_close(c, ref_c)


def _flat_params(shapes, dtype=torch.float32):
    """Leaf parameters that are views of one buffer, as nn.LSTM keeps them on CUDA."""
    buf = torch.randn(sum(torch.Size(s).numel() for s in shapes), dtype=dtype)
    params, at = [], 0
    for s in shapes:
        n = torch.Size(s).numel()
        p = torch.nn.Parameter(torch.empty(0, dtype=dtype))
        p.data = buf[at:at + n].view(s)
        params.append(p)
        at += n
    return params


def test_cast_flat_weights_is_one_copy_and_routes_every_gradient():
    """LSTM's fp16 weights under autocast: views of ONE cast buffer at the weights' own
    offsets (what cuDNN accepts as flat), and gradients back to each fp32 weight, from a
    flat gradient buffer (cuDNN's) or from separate tensors."""
    from onmt_mirror.modules.lstm import _CastFlatWeights

    torch.manual_seed(0)
    shapes = [(8, 3), (8, 2), (8,), (8,)]
    params = _flat_params(shapes)
    half = _CastFlatWeights.apply(*params)
    assert len({h.untyped_storage().data_ptr() for h in half}) == 1
    for p, h in zip(params, half):
        assert h.dtype == torch.half and h.storage_offset() == p.storage_offset()
        torch.testing.assert_close(h, p.detach().half(), rtol=0, atol=0)

    flat_grads = [g.half() for g in _flat_params(shapes)]
    torch.autograd.backward(half, flat_grads)
    for p, g in zip(params, flat_grads):
        torch.testing.assert_close(p.grad, g.float(), rtol=0, atol=0)

    for p in params:
        p.grad = None
    half = _CastFlatWeights.apply(*params)
    loose = [torch.randn(s).half() for s in shapes]
    torch.autograd.backward(half[:3], loose[:3])  # the last weight gets no gradient
    for p, g in zip(params[:3], loose):
        torch.testing.assert_close(p.grad, g.float(), rtol=0, atol=0)
    assert params[3].grad is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN's flat weights need CUDA")
@pytest.mark.parametrize("packed", [False, True])
def test_flat_cast_lstm_equals_nn_lstm_under_autocast(packed):
    """On CUDA under autocast, LSTM (one cast of the flat weights) gives nn.LSTM's outputs
    and gradients, and cuDNN takes its fp16 weights as one chunk (no copy, no warning)."""
    import warnings

    from torch.nn.utils.rnn import pack_padded_sequence

    from onmt_mirror.modules.lstm import LSTM

    torch.manual_seed(0)
    ours = LSTM(16, 32, 2, batch_first=True, dropout=0.0).cuda()
    ref = torch.nn.LSTM(16, 32, 2, batch_first=True).cuda()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(5, 7, 16, device="cuda")
    lengths = torch.tensor([7, 3, 5, 1, 7])
    h0 = (torch.randn(2, 5, 32, device="cuda"), torch.randn(2, 5, 32, device="cuda"))
    results = []
    for lstm in (ours, ref):
        inp = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False) \
            if packed else x
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with torch.autocast("cuda", dtype=torch.float16):
                if lstm is ours:
                    assert lstm.flat_half_weights() is not None
                out, (h, c) = lstm(inp, h0)
        out = out.data if packed else out
        (out.float().square().sum() + h.float().sum() + c.float().sum()).backward()
        results.append([out, h, c] + [p.grad for p in lstm.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("input_feed", [False, True])
def test_decoding_steps_follow_beam_reorders(input_feed):
    """Dec1 stepped one token at a time through the decoding interface, its state tiled
    and its rows shuffled between steps as beam search does (map_state), gives the
    teacher-forced outputs of the same rows: state, z and the attention mask move with
    the rows."""
    torch.manual_seed(0)
    model = MirrorModel(tiny_config(input_feed=input_feed)).eval()
    for p in model.parameters():
        torch.nn.init.uniform_(p, -0.3, 0.3)
    src, tgt, src_len = make_batch(seed=4, batch=5)
    iface = model.decoder
    with torch.no_grad():
        x_out, hidden, x_len = model.encoder(src, src_len)
        h0, c0, z = hidden
        mask = torch.arange(x_out.size(1))[None, :] < x_len[:, None]
        ref, _, _, _ = model.dec_y_cxz(model.embed(tgt[:, :-1, 0], "y_cxz"), z, (h0, c0),
                                       x_out, mask)
        iface.init_state(src, x_out, hidden)
        iface.map_state(lambda s, dim=0: s.repeat_interleave(3, dim))
        rows = torch.arange(5).repeat_interleave(3)
        enc_out, lens = x_out[rows], x_len[rows]
        g = torch.Generator().manual_seed(1)
        for t in range(tgt.size(1) - 1):
            perm = torch.randperm(rows.numel(), generator=g)
            iface.map_state(lambda s, dim: s[perm])
            rows, enc_out, lens = rows[perm], enc_out[perm], lens[perm]
            assert torch.equal(iface.state["mask"], mask[rows])  # no rebuild per step
            out, _ = iface(tgt[rows, t:t + 1], enc_out, src_len=lens, step=t)
            torch.testing.assert_close(out[:, 0], ref[rows, t], rtol=1e-5, atol=1e-5)
