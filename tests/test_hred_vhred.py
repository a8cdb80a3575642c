"""HRED's context channel and VHRED's latent (Serban et al. 2016, 2017), on the CPU.

The HRED test trains the model that examples/dailydialog/hred.yaml's model lines build
(at tiny sizes) on a corpus where the reply names a topic that only the context turn
holds: a model that reads the dialogue predicts it, one that does not cannot. The HRED
that fed the context state to the decoder's initial state only (the stock decoder)
collapsed here as on DailyDialog: NLL unchanged in every digit by shuffling the
contexts, one greedy reply for every dialogue (docs/results.md)."""
import random

import onmt.model_builder
import pyonmttok
import pytest
import torch
import yaml
from conftest import REPO
from onmt.opts import train_opts
from onmt.utils.parse import ArgumentParser

from onmt_mirror.dialogue import QUERY_TOKEN, TURN_TOKEN
from onmt_mirror.errors import MirrorError

TOPICS = ["tea", "rain", "bus", "cat", "book", "song"]
FILLERS = ["w%d" % i for i in range(30)]
WORDS = ["<unk>", "<blank>", "<s>", "</s>", QUERY_TOKEN, TURN_TOKEN, "i", "like", "the",
         "."] + TOPICS + FILLERS


def topic_windows(n, seed):
    """src = c ｟mirror_query｠ x with the topic as c's last word; y names the topic."""
    r = random.Random(seed)
    windows = []
    for _ in range(n):
        topic = r.choice(TOPICS)
        c = [r.choice(FILLERS) for _ in range(r.randint(3, 6))] + [topic]
        x = [r.choice(FILLERS) for _ in range(r.randint(2, 5))]
        windows.append((c + [QUERY_TOKEN] + x, ["i", "like", "the", topic, "."]))
    return windows


def padded(vocab, rows):
    pad = vocab["<blank>"]
    ids = [[vocab[w] for w in row] for row in rows]
    width = max(map(len, ids))
    return (torch.tensor([r + [pad] * (width - len(r)) for r in ids])[:, :, None],
            torch.tensor([len(r) for r in ids]))


def batch(vocab, windows):
    src, src_len = padded(vocab, [s for s, _ in windows])
    tgt, _ = padded(vocab, [["<s>"] + y + ["</s>"] for _, y in windows])
    return src, src_len, tgt


def recipe_model(name, vocabs, **sizes):
    """The model that examples/dailydialog/<name>.yaml's model lines build, at `sizes`."""
    cfg = yaml.safe_load((REPO / "examples" / "dailydialog" / (name + ".yaml")).read_text())
    parser = ArgumentParser()
    train_opts(parser)
    opt = parser.parse_args(["-data", "{}", "-src_vocab", "unused"])
    for key in ("encoder_type", "decoder_type", "rnn_type", "global_attention",
                "input_feed"):
        if key in cfg:
            setattr(opt, key, cfg[key])
    opt.dropout, opt.attention_dropout = [0.0], [0.0]
    for key, value in sizes.items():
        setattr(opt, key, value)
    ArgumentParser.update_model_opts(opt)
    return onmt.model_builder.build_base_model(opt, vocabs)


def token_nll(model, src, src_len, tgt, pad):
    out, _ = model(src, tgt, src_len)
    logp = torch.log_softmax(model.generator(out), -1)
    gold = tgt[:, 1:, 0]
    real = gold.ne(pad)
    return float(-(logp.gather(-1, gold[..., None])[..., 0] * real).sum() / real.sum())


def greedy(model, vocab, src, src_len, steps=6):
    """Greedy replies through the calls onmt_translate makes (encoder, init_state,
    decoder, generator)."""
    enc_out, final, src_len = model.encoder(src, src_len)
    model.decoder.init_state(src, enc_out, final)
    tok = torch.full((src.size(0), 1, 1), vocab["<s>"])
    words = []
    for _ in range(steps):
        out, _ = model.decoder(tok, enc_out, src_len=src_len)
        tok = model.generator(out[:, -1]).argmax(-1)[:, None, None]
        words.append(tok[:, 0, 0])
    return {" ".join(vocab.ids_to_tokens[i] for i in row).split(" </s>")[0]
            for row in torch.stack(words, 1).tolist()}


@pytest.fixture(scope="module")
def vocabs():
    vocab = pyonmttok.build_vocab_from_tokens(WORDS, maximum_size=0, minimum_frequency=0,
                                              special_tokens=[])
    return {"src": vocab, "tgt": vocab}


def test_hred_replies_depend_on_the_dialogue(vocabs):
    """600 batches of 32 (about 3 s). Glorot initialisation: at these tiny sizes the
    recipe's uniform(±0.08) leaves even Seq2SeqAttn blind to the topic after 600 batches.
    Measured with seed 3: NLL/token 0.005 true vs 0.95 shuffled, 6 distinct replies (the
    first HRED: 0.30 vs 0.30, one reply, also after 1,000 batches and for seeds 1-5)."""
    vocab = vocabs["src"]
    torch.manual_seed(3)
    model = recipe_model("hred", vocabs, hidden_size=32, enc_hid_size=32,
                         dec_hid_size=32, word_vec_size=16, src_word_vec_size=16,
                         tgt_word_vec_size=16, layers=1, enc_layers=1, dec_layers=1)
    for p in model.parameters():
        torch.nn.init.xavier_uniform_(p) if p.dim() > 1 else torch.nn.init.zeros_(p)
    train = topic_windows(800, seed=1)
    optim = torch.optim.Adam(model.parameters(), lr=0.005)
    order = random.Random(3)
    model.train()
    for _ in range(600):
        src, src_len, tgt = batch(vocab, order.sample(train, 32))
        out, _ = model(src, tgt, src_len)
        loss = torch.nn.functional.cross_entropy(
            model.generator(out).flatten(0, 1), tgt[:, 1:, 0].flatten(),
            ignore_index=vocab["<blank>"])
        optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        optim.step()
    model.eval()
    src, src_len, tgt = batch(vocab, topic_windows(64, seed=2))
    shift = torch.roll(torch.arange(64), 1)
    with torch.no_grad():
        true = token_nll(model, src, src_len, tgt, vocab["<blank>"])
        shuffled = token_nll(model, src[shift], src_len[shift], tgt, vocab["<blank>"])
        replies = greedy(model, vocab, *batch(vocab, topic_windows(64, seed=3))[:2])
    # the topic is 1 of the reply's 6 tokens: log(6) / 6 = 0.30 nats/token if ignored
    assert shuffled - true > 0.2, (true, shuffled)
    assert len(replies) >= 4, replies


def test_hred_checkpoint_of_the_stock_decoder_is_refused_in_one_line(vocabs):
    with pytest.raises(MirrorError, match="decoder_type hred") as err:
        recipe_model("hred", vocabs, decoder_type="rnn", input_feed=1)
    assert "\n" not in str(err.value)


TURN = 5  # a word id of conftest's 40-word vocabulary used as ｟mirror_turn｠


@pytest.fixture
def vhred():
    """A tiny VHRED, as examples/dailydialog/vhred.yaml's model lines configure Mirror."""
    from conftest import tiny_config

    from onmt_mirror.models.mirror import MirrorModel

    cfg = yaml.safe_load((REPO / "examples" / "dailydialog" / "vhred.yaml").read_text())
    torch.manual_seed(0)
    model = MirrorModel(tiny_config(
        decoders=tuple(cfg["mirror_decoders"].split(",")), prior=cfg["mirror_prior"],
        context_encoder=cfg["mirror_context_encoder"], turn_id=TURN))
    for p in model.parameters():
        torch.nn.init.uniform_(p, -0.3, 0.3)
    return model


def vhred_batch():
    """conftest's batch (pad 1, <s> 2, </s> 3, ｟mirror_query｠ 4) with position 1 made a
    turn separator: two context turns, then x (row 2's second turn is empty; it keeps its
    slot)."""
    from conftest import make_batch

    src, tgt, src_len = make_batch(batch=4)
    src = src.clone()
    src[:, 1, 0] = TURN
    return src, tgt, src_len


@torch.no_grad()
def test_vhred_kl_is_the_gaussian_kl_of_its_prior_and_posterior(vhred):
    """KL(q(z|context state, y) || p(z|context state)) of Eq. 1, summed over the batch,
    against torch.distributions; the context state has read both turns of c and x."""
    from conftest import EOS, PAD

    vhred.eval()
    src, tgt, src_len = vhred_batch()
    _, attns = vhred(src, tgt, src_len)
    y = tgt[:, 1:, 0].masked_fill(tgt[:, 1:, 0].eq(EOS), PAD)
    enc = vhred.encode_dialogue(src[:, :, 0], src_len, y, y.ne(PAD).sum(1))
    mu_p, logvar_p = vhred.prior_net(enc["c"].vector)
    mu_q, logvar_q = vhred.posterior_net(torch.cat([enc["c"].vector, enc["y"].vector], -1))
    normal = torch.distributions.Normal
    expected = torch.distributions.kl_divergence(
        normal(mu_q, (0.5 * logvar_q).exp()), normal(mu_p, (0.5 * logvar_p).exp())).sum()
    assert float(attns["mirror"]["kl"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(expected) > 0.1
    # the context state reads x (Serban et al.: c, then x) and c's first turn
    other_x = src.clone()
    other_x[0, src_len[0] - 1, 0] = 39 if int(src[0, src_len[0] - 1, 0]) != 39 else 38
    other_c = src.clone()
    other_c[0, 0, 0] = 39 if int(src[0, 0, 0]) != 39 else 38
    for changed in (other_x, other_c):
        vec = vhred.encode_dialogue(changed[:, :, 0], src_len)["c"].vector
        assert not torch.allclose(vec[0], enc["c"].vector[0])
        assert torch.equal(vec[1:], enc["c"].vector[1:])


def test_vhred_elbo_reaches_prior_posterior_and_context_nets(vhred):
    """One training step's Eq. 1 (reconstruction + KL) sends gradient to the prior and the
    posterior nets and to the context RNN (through both and through the decoder)."""
    vhred.train()
    src, tgt, src_len = vhred_batch()
    _, attns = vhred(src, tgt, src_len)
    terms = attns["mirror"]
    (terms["nll_y_cxz"] + terms["kl"]).backward()
    for name in ("prior_net", "posterior_net", "context_encoder.context_rnn",
                 "context_encoder.utterance_rnn", "utterance_encoder"):
        grads = [p.grad for n, p in vhred.named_parameters() if n.startswith(name)]
        assert grads and all(g is not None and float(g.abs().sum()) > 0 for g in grads), name


def test_vhred_decoder_reads_z_and_the_context_state_at_every_step(vhred):
    """Dec1's every input is [word; z; context state]: another z, or another context at the
    same z, changes its outputs; beam search's state holds both, the re-rankers z alone."""
    vhred.eval()
    cfg = vhred.cfg
    assert vhred.dec_y_cxz.lstm.input_size == cfg.emb_size + cfg.z_size + cfg.hidden_size
    src, tgt, src_len = vhred_batch()
    enc = vhred.encode_dialogue(src[:, :, 0], src_len)
    vecs, memories = vhred.decoder_inputs(enc)
    z = vhred.prior(enc)[0]
    y_in = tgt[:, :-1, 0]
    with torch.no_grad():
        out, _ = vhred.run_decoder("y_cxz", y_in, z, vecs, memories)
        other_z, _ = vhred.run_decoder("y_cxz", y_in, z + 1.0, vecs, memories)
        other_c, _ = vhred.run_decoder("y_cxz", y_in, z, dict(vecs, c=vecs["c"].roll(1, 0)),
                                       memories)
    assert (out - other_z).abs().amax(-1).min() > 1e-4  # at every step of every row
    assert (out - other_c).abs().amax(-1).min() > 1e-4
    _, (_, _, state_z), _ = vhred.encoder(src, src_len)
    assert torch.equal(state_z, torch.cat([z, vecs["c"]], -1))
    assert torch.equal(vhred.decoder.z, z)
