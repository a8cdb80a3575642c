"""HRED's hierarchical encoder, the HRED model as the plugin builds it, VHRED's option."""
import pytest
import torch

import onmt  # noqa: F401  (registers the plugin)
import onmt.model_builder
from conftest import PAD, QUERY, make_batch, tiny_config
from onmt_mirror.models.hred import HierarchicalContextEncoder, HREDEncoder, turn_layout
from onmt_mirror.models.mirror import MirrorModel

TURN = 4  # separator ids used in the encoder tests below
SEPS = (3, TURN)


def loop_reference(enc, table, row):
    """The hierarchical encoder written as the definition: one turn at a time."""
    turns, cur = [], []
    for t in row:
        if t in SEPS:
            turns.append(cur)
            cur = []
        else:
            cur.append(t)
    turns.append(cur)
    vecs = []
    for turn in turns:
        ids = torch.tensor([turn or [PAD]])
        _, v = enc.utterance_rnn(table(ids), torch.tensor([max(len(turn), 1)]))
        vecs.append(v[0])
    _, ctx = enc.context_rnn(torch.stack(vecs)[None], torch.tensor([len(vecs)]))
    return ctx[0]


def test_hierarchical_encoder_matches_turn_by_turn_definition():
    torch.manual_seed(0)
    enc = HierarchicalContextEncoder(5, 6, 2, 0.0, False, SEPS).eval()
    table = torch.nn.Embedding(20, 5, padding_idx=PAD)
    # 3 turns; 2 turns; a context cut so that it starts with a separator (empty turn)
    rows = [[5, 6, 3, 7, 8, 9, 4, 10], [11, 4, 12, 13], [3, 5, 6, 4, 7]]
    L = max(map(len, rows))
    tok = torch.tensor([r + [PAD] * (L - len(r)) for r in rows])
    lens = torch.tensor([len(r) for r in rows])
    memory, vec = enc(table(tok), lens, tok)
    assert memory.shape == (3, L, 6) and vec.shape == (3, 6)
    for i, row in enumerate(rows):
        assert torch.allclose(vec[i], loop_reference(enc, table, row), atol=1e-6)
    lay = turn_layout(tok, lens, SEPS)
    assert lay["n_turns"].tolist() == [3, 2, 3]
    assert lay["turn_len"].tolist() == [[2, 3, 1], [1, 2, 0], [0, 2, 1]]
    assert bool(memory[1, 4:].eq(0).all())  # padding stays zero


def test_every_turn_reaches_the_context_state():
    torch.manual_seed(0)
    enc = HierarchicalContextEncoder(5, 6, 1, 0.0, False, SEPS)
    table = torch.nn.Embedding(20, 5, padding_idx=PAD)
    tok = torch.tensor([[5, 6, 3, 7, 8, 4, 10, 11]])
    emb = table(tok).detach().requires_grad_()
    _, vec = enc(emb, torch.tensor([8]), tok)
    vec.sum().backward()
    grad = emb.grad[0].abs().sum(-1)
    assert bool((grad[[0, 1, 3, 4, 6, 7]] > 0).all())  # every word of every turn


def hred_opt(**overrides):
    from onmt.opts import train_opts
    from onmt.utils.parse import ArgumentParser

    parser = ArgumentParser()
    train_opts(parser)
    opt = parser.parse_args(["-data", "{}", "-src_vocab", "unused"])
    vals = dict(encoder_type="hred", decoder_type="hred", rnn_type="LSTM", layers=2,
                hidden_size=16, word_vec_size=8, global_attention="none", dropout=[0.0],
                attention_dropout=[0.0], input_feed=1)
    vals.update(overrides)
    for k, v in vals.items():
        setattr(opt, k, v)
    ArgumentParser.update_model_opts(opt)
    return opt


def vocabs_with_separators():
    import pyonmttok

    from onmt_mirror.opts import QUERY_TOKEN, TURN_TOKEN

    words = ["<unk>", "<blank>", "<s>", "</s>", QUERY_TOKEN, TURN_TOKEN] + \
        ["w%d" % i for i in range(20)]
    vocab = pyonmttok.build_vocab_from_tokens(words, maximum_size=0, minimum_frequency=0,
                                              special_tokens=[])
    return {"src": vocab, "tgt": vocab}


@pytest.mark.parametrize("attention", ["none", "general"])
def test_hred_model_built_by_plugin_decodes_like_a_stock_model(attention):
    vocabs = vocabs_with_separators()
    opt = hred_opt(global_attention=attention)
    torch.manual_seed(0)
    model = onmt.model_builder.build_base_model(opt, vocabs)
    for p in model.parameters():  # build_base_model leaves init to build_model
        torch.nn.init.uniform_(p, -0.1, 0.1)
    assert isinstance(model.encoder, HREDEncoder)
    src_vocab = vocabs["src"]
    assert model.encoder.context.separator_ids == (src_vocab["｟mirror_turn｠"],
                                                   src_vocab["｟mirror_query｠"])
    # checkpoint rules: no duplicated module, only the output layer named *generator*
    keys = list(model.state_dict())
    assert len(keys) == len(set(keys))
    assert [k for k in keys if "generator" in k] == ["generator.weight", "generator.bias"]
    assert not list(model.named_parameters(recurse=False))
    # src: turn1 ｟mirror_turn｠ turn2 ｟mirror_query｠ x ; changing turn1 changes (h0, c0)
    t, q = src_vocab["｟mirror_turn｠"], src_vocab["｟mirror_query｠"]
    row = [10, 11, t, 12, 13, q, 14]
    src = torch.tensor([row, [15] + row[1:]])[:, :, None]
    enc_out, (h0, c0, ctx), _ = model.encoder(src, torch.tensor([7, 7]))
    assert h0.shape == (2, 2, 16) and enc_out.shape == (2, 7, 16)
    assert not torch.allclose(h0[:, 0], h0[:, 1])
    # the stock training path: NMTModel.forward -> stock decoder
    tgt = torch.tensor([[2, 16, 17, 3], [2, 18, 3, 1]])[:, :, None]
    dec_out, attns = model(src, tgt, torch.tensor([7, 7]))
    assert dec_out.shape == (2, 3, 16)


def test_hred_needs_the_triple_vocabulary():
    import pyonmttok

    from onmt_mirror.errors import MirrorError

    vocab = pyonmttok.build_vocab_from_tokens(["<unk>", "<blank>", "<s>", "</s>", "a"],
                                              maximum_size=0, minimum_frequency=0)
    with pytest.raises(MirrorError, match="mirror_triple"):
        onmt.model_builder.build_base_model(hred_opt(), {"src": vocab, "tgt": vocab})


def test_vhred_is_mirror_with_the_hierarchical_context_encoder():
    TURN_ID = 5  # a token id of conftest's 40-word vocabulary used as ｟mirror_turn｠
    torch.manual_seed(0)
    cfg = tiny_config(decoders=("y_cxz",), prior="cx", context_encoder="hierarchical",
                      turn_id=TURN_ID)
    model = MirrorModel(cfg).eval()
    assert isinstance(model.context_encoder, HierarchicalContextEncoder)
    assert model.context_encoder.separator_ids == (TURN_ID, QUERY)
    src, tgt, src_len = make_batch(batch=3)
    out, attns = model(src, tgt, src_len)
    # Dec1's outputs on the real target tokens (y and </s>), one row each
    assert out.shape == (int(tgt[:, 1:].ne(PAD).sum()), cfg.hidden_size)
    assert torch.isfinite(attns["mirror"]["nll_y_cxz"])
    # two context turns vs the same words as one turn: the hierarchical encoder differs
    x = [20, 21]
    a = torch.tensor([[10, 11, TURN_ID, 12, QUERY] + x])
    b = torch.tensor([[10, 11, 30, 12, QUERY] + x])
    va = model.encode_dialogue(a, torch.tensor([7]))["c"].vector
    vb = model.encode_dialogue(b, torch.tensor([7]))["c"].vector
    assert not torch.allclose(va, vb)
    keys = list(model.state_dict())
    assert len(keys) == len(set(keys)) and any(k.startswith("context_encoder.context_rnn")
                                               for k in keys)


def test_flat_context_encoder_is_unchanged_by_default():
    cfg = tiny_config()
    assert cfg.context_encoder == "flat"
    assert not isinstance(MirrorModel(cfg).context_encoder, HierarchicalContextEncoder)
