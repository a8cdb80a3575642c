"""Decoding with K samples of z and the Dec3 re-rank (onmt_mirror/translate/multi_z.py).

In process, the stock Translator drives a tiny random Mirror whose replies depend on z
(its output layer and Dec1's z inputs are scaled up; specials other than </s> are banned):
K = 1 is the stock decoding; each of the K copies is the beam of its own prior sample;
the re-rank score is the formula recomputed through MirrorModel.forward (the training
path) with the posterior fixed at the candidate's z; the CVAE is refused with lambda != 0.
Through the stock CLIs (the re-rank tests' tiny trained Mirror): onmt_translate's K x n_best
lines per input in order, the score file `rerank tune` reads, and onmt_server's replies.
"""
import argparse
import io
import json
import logging
import re

import pytest
import pyonmttok
import torch
from onmt.opts import translate_opts
from onmt.translate import GNMTGlobalScorer
from onmt.translate.translator import Translator
from onmt.utils.parse import ArgumentParser

from conftest import BOS, EOS, PAD, QUERY, make_batch, tiny_config
from onmt_mirror.errors import MirrorError
from onmt_mirror.models import mirror
from onmt_mirror.registration import original
from onmt_mirror.rerank import nbest as nb
from onmt_mirror.rerank.__main__ import main as rerank_main
from test_baselines_cli import DIALOGUES, run, train, work  # noqa: F401  (fixture)
from test_rerank_cli import Fixed

WORDS = ["<unk>", "<blank>", "<s>", "</s>", "｟mirror_query｠"] + \
    ["w%d" % i for i in range(5, 40)]
VOCAB = pyonmttok.build_vocab_from_tokens(WORDS, maximum_size=0, minimum_frequency=0,
                                          special_tokens=[])
VOCABS = {"src": VOCAB, "tgt": VOCAB, "decoder_start_token": "<s>"}
B, K, N = 3, 3, 2


def decoding_model(**overrides):
    """Random, with replies that change with z and often end before -max_length."""
    torch.manual_seed(0)
    cfg = tiny_config(**overrides)
    model = mirror.MirrorModel(cfg)
    for p in model.parameters():
        torch.nn.init.uniform_(p, -0.3, 0.3)
    with torch.no_grad():
        model.generator.weight *= 8
        model.generator.bias[[VOCAB["<unk>"], PAD, BOS, QUERY]] = -30.0
        model.generator.bias[EOS] += 1.0
        model.dec_y_cxz.lstm.weight_ih_l0[:, cfg.emb_size:] *= 4  # z's inputs
    return model.eval()


def translator(model, *args, logger=None):
    parser = ArgumentParser()
    translate_opts(parser)
    opt = parser.parse_args(["-model", "unused.pt", "-src", "unused", "-beam_size", "3",
                             "-max_length", "6", "-min_length", "1", "-length_penalty",
                             "none"] + list(args))
    model_opt = argparse.Namespace(model_task="seq2seq", copy_attn=False,
                                   mirror_max_utterance_tokens=45)
    return Translator.from_opt(model, VOCABS, opt, model_opt, out_file=io.StringIO(),
                               global_scorer=GNMTGlobalScorer.from_opt(opt),
                               report_score=False, logger=logger)


def batch(ind_in_bucket=(0, 1, 2)):
    src, _, src_len = make_batch(seed=1, batch=B)
    return {"src": src, "srclen": src_len, "ind_in_bucket": list(ind_in_bucket),
            "cid_line_number": list(ind_in_bucket)}


def tokens(results):
    return [[p.tolist() for p in row] for row in results["predictions"]]


@pytest.mark.parametrize("z", ["mean", "sample"])
def test_one_sample_is_the_stock_decoding(z):
    model = decoding_model()
    t = translator(model, "-n_best", "2", "-mirror_num_z", "1", "-mirror_z", z,
                   "-seed", "5")
    assert t.multi_z is None and t.n_best == N
    ours = t.translate_batch(batch(), False)
    torch.manual_seed(5)
    stock = original(Translator, "translate_batch")(t, batch(), False)
    assert tokens(ours) == tokens(stock) and ours["scores"] == stock["scores"]


def test_each_copy_is_the_beam_of_its_own_prior_sample(monkeypatch):
    model = decoding_model()
    t = translator(model, "-n_best", "2", "-mirror_num_z", "3", "-seed", "5")
    assert model.z_mode == "sample" and t.n_best == K * N
    out = t.translate_batch(batch(), False)
    z = model.decoder.z
    # copy k of input b is row b*K + k, z = mu + sigma * eps with the seeded stream's eps
    with torch.no_grad():
        src = batch()
        mu, logvar = model.prior(model.encode_dialogue(src["src"][:, :, 0], src["srclen"]))
    eps = torch.randn(B * K, model.cfg.z_size, generator=torch.Generator().manual_seed(5))
    sigma = torch.exp(0.5 * logvar)
    torch.testing.assert_close(z, mu.repeat_interleave(K, 0)
                               + sigma.repeat_interleave(K, 0) * eps)
    assert [len(row) for row in out["predictions"]] == [K * N] * B
    for k in range(K):
        monkeypatch.setattr(mirror, "reparameterize", lambda m, lv, zk=z[k::K]: zk)
        single = translator(model, "-n_best", "2", "-mirror_z", "sample")
        alone = single.translate_batch(batch(), False)
        for b in range(B):
            assert tokens(out)[b][k * N:(k + 1) * N] == tokens(alone)[b]
            assert out["scores"][b][k * N:(k + 1) * N] == pytest.approx(alone["scores"][b],
                                                                        abs=1e-5)
    # z matters here: some input's samples give different best replies
    assert any(len({str(tokens(out)[b][k * N]) for k in range(K)}) > 1 for b in range(B))


def forward_log_probs(model, src, src_len, y, z):
    """log p(y|c,x,z) and log p(x|c,z,y) from MirrorModel.forward (the training path),
    the posterior fixed at z (eval mode decodes with its mean)."""
    tgt = torch.tensor([[BOS] + y + [EOS]])[:, :, None]
    posterior, model.posterior_net = model.posterior_net, Fixed(z[None])
    try:
        with torch.no_grad():
            terms = model(src[None], tgt, src_len[None])[1]["mirror"]
    finally:
        model.posterior_net = posterior
    return -float(terms["nll_y_cxz"]), -float(terms.get("nll_x_cyz", 0.0))


def test_rerank_score_is_the_formula_by_teacher_forcing(tmp_path):
    lam, gamma = 0.7, 0.4
    model = decoding_model()
    seeded = ["-n_best", "2", "-mirror_num_z", "3", "-seed", "5"]
    t = translator(model, *seeded, "-mirror_rerank_scores", str(tmp_path / "s.tsv"))
    every = t.translate_batch(batch(), False)
    z, src = model.decoder.z.clone(), batch()
    groups = nb.read_scores(tmp_path / "s.tsv")
    expected = []
    for b in range(B):
        formula = []
        for r, pred in enumerate(tokens(every)[b]):
            y = pred[:-1] if pred[-1] == EOS else pred
            fwd, bwd = forward_log_probs(model, src["src"][b], src["srclen"][b], y,
                                         z[b * K + r // N])
            row = groups[b][r]
            assert (row["rank"], row["length"], row["candidate"]) == \
                (r, len(y), " ".join(WORDS[i] for i in y))
            assert row["fwd"] == pytest.approx(fwd, abs=1e-4)
            assert row["bwd"] == pytest.approx(bwd, abs=1e-4)
            if pred[-1] == EOS:  # the beam's own score (no length penalty) is Dec1's
                assert every["scores"][b][r] == pytest.approx(fwd, abs=1e-4)
            formula.append(fwd + lam * bwd + gamma * len(y))
        expected.append(formula)
    best = translator(model, *seeded, "-mirror_rerank", "-mirror_rerank_lambda", str(lam),
                      "-mirror_rerank_gamma", str(gamma)).translate_batch(batch(), False)
    moved = 0
    for b in range(B):
        order = sorted(range(K * N), key=lambda r: -expected[b][r])[:N]
        assert tokens(best)[b] == [tokens(every)[b][r] for r in order]
        assert best["scores"][b] == pytest.approx([expected[b][r] for r in order],
                                                  abs=1e-4)
        moved += order != [0, 1]
    assert moved  # the re-rank changed what the first sample's beam would say


def test_output_path_writes_k_x_n_best_lines_per_input_in_input_order():
    """Rows arrive sorted by length (ind_in_bucket says where each input belongs): the
    stock output path writes input 0's K x n_best lines, then input 1's; -verbose logs
    one best reply per input."""
    model = decoding_model()
    records = []
    logger = logging.getLogger("test_multi_z")
    logger.addHandler(logging.Handler())
    logger.handlers[-1].emit = records.append
    logger.setLevel(logging.INFO)
    t = translator(model, "-n_best", "2", "-mirror_num_z", "3", "-seed", "5", "-verbose",
                   logger=logger)
    shuffled = batch(ind_in_bucket=(2, 0, 1))
    scores, preds = t._translate([(shuffled, 0)])
    lines = t.out_file.getvalue().splitlines()
    assert len(lines) == B * K * N and [len(p) for p in preds] == [K * N] * B
    torch.manual_seed(5)
    rows = tokens(t.translate_batch(batch(), False))
    for i, row in enumerate([rows[1], rows[2], rows[0]]):  # inputs 0, 1, 2
        text = [" ".join(WORDS[w] for w in p if w != EOS) for p in row]
        assert lines[i * K * N:(i + 1) * K * N] == preds[i] == text
    assert sum("PRED SCORE" in r.getMessage() for r in records) == B


def test_cvae_rerank_needs_lambda_zero():
    cvae = decoding_model(decoders=("y_cxz",), prior="cx")
    with pytest.raises(MirrorError) as err:
        translator(cvae, "-mirror_num_z", "2", "-mirror_rerank")
    assert "\n" not in str(err.value) and "-mirror_rerank_lambda 0" in str(err.value)
    t = translator(cvae, "-n_best", "2", "-mirror_num_z", "2", "-mirror_rerank",
                   "-mirror_rerank_lambda", "0", "-mirror_rerank_gamma", "0.5", "-seed", "5")
    out = t.translate_batch(batch(), False)
    assert [len(row) for row in out["predictions"]] == [N] * B
    with pytest.raises(MirrorError, match="drop -mirror_z"):
        translator(decoding_model(), "-mirror_num_z", "2", "-mirror_z", "mean")


def test_onmt_translate_k_samples_the_score_file_tune_and_rerank(work):  # noqa: F811
    ckpt = train(work, "mirror")
    common = ["onmt_translate", "-model", str(ckpt), "-src", "train.src", "-beam_size",
              "2", "-n_best", "2", "-max_length", "8", "-length_penalty", "none",
              "-mirror_num_z", "3", "-seed", "7"]
    proc = run(common + ["-output", "k.txt", "-mirror_rerank_scores", "k.tsv", "-verbose"],
               work)
    lines = (work / "k.txt").read_text().splitlines()
    per = K * N
    assert len(lines) == per * len(DIALOGUES)
    assert len(re.findall(r"(?m)^PRED SCORE: ", proc.stderr)) == len(DIALOGUES)
    groups = nb.read_scores(work / "k.tsv")
    assert [[r["candidate"] for r in g] for g in groups] == \
        [lines[i * per:(i + 1) * per] for i in range(len(DIALOGUES))]
    rerank_main(["tune", "--scores", str(work / "k.tsv"), "--ref", str(work / "train.tgt"),
                 "--lambdas", "0,0.5,1", "--gammas=-0.5,0,0.5", "--output",
                 str(work / "k.json")])
    params = json.loads((work / "k.json").read_text())
    run(common + ["-output", "best.txt", "-mirror_rerank", "-mirror_rerank_lambda",
                  str(params["lambda"]), "-mirror_rerank_gamma", str(params["gamma"])], work)
    best = (work / "best.txt").read_text().splitlines()
    assert len(best) == N * len(DIALOGUES)
    assert best[::N] == nb.rerank(groups, params["lambda"], params["gamma"])


def test_server_returns_k_x_n_best_replies_also_after_a_reload(work, tmp_path):  # noqa: F811
    from onmt.translate.translation_server import TranslationServer

    ckpt = train(work, "mirror")
    opt = {"transforms": "mirror_triple", "beam_size": 2, "n_best": 2, "max_length": 8,
           "mirror_num_z": 3, "seed": 7}
    entry = {"model": ckpt.name, "load": True, "timeout": -1,
             "preprocess": ["onmt_mirror.chat.preprocess.mirror_history"]}
    (tmp_path / "conf.json").write_text(json.dumps({
        "models_root": str(ckpt.parent),
        "models": [dict(entry, id=1, opt=opt),
                   dict(entry, id=2, opt=dict(opt, mirror_rerank=True))]}))
    server = TranslationServer()
    server.start(str(tmp_path / "conf.json"))
    histories = [{"id": 1, "src": " __eou__ ".join(d[:3])} for d in DIALOGUES[:2]]
    for _ in range(2):
        replies, scores, n_best = server.run(histories)[:3]
        assert n_best == K * N and len(replies) == len(scores) == 2 * K * N
        server.models[1].unload()
        server.models[1].load()
    replies, _, n_best = server.run([dict(h, id=2) for h in histories])[:3]
    assert n_best == N and len(replies) == 2 * N
