"""DC's beam scorer inside the stock OpenNMT-py beam search (onmt_mirror/dc/scorer.py).

A hand-made case where the constraint must flip the chosen response towards the source's
topic; a randomised case where every finished hypothesis' beam score must equal the formula
log p(y) + α cos_topic + β cos_SIF recomputed from scratch (incremental sums, reordering
and dropping finished examples included); and α = β = 0 leaving the stock beam untouched.
"""
import numpy as np
import pytest
import torch

import onmt  # noqa: F401  (the .pth hook registers the plugin, DC's beam patch included)
from onmt.translate.beam_search import BeamSearch, GNMTGlobalScorer
from onmt_mirror.dc.scorer import DCScorer
from onmt_mirror.dc.side_models import SideModels

UNK, PAD, BOS, EOS = 0, 1, 2, 3
SPECIALS = ["<unk>", "<blank>", "<s>", "</s>"]


def side_models(topic, sif):
    """SideModels from {word: topic vector} and {word: SIF direction}, no fitting."""
    tw = list(topic)
    sw = list(sif)
    return SideModels({"lowercase": False}, tw, np.array([topic[w] for w in tw], np.float32),
                      sw, np.array([sif[w] for w in sw], np.float32))


def run_beam(step_log_probs, src, scorer, beam_size, max_length=6, n_best=1):
    """Drive the stock BeamSearch as Translator does; step_log_probs(example, step, prev)
    -> [V] log-probs. Returns (predictions, scores) per example."""
    batch = src.size(0)
    beam = BeamSearch(beam_size, batch_size=batch, pad=PAD, bos=BOS, eos=EOS, unk=UNK,
                      start=BOS, n_best=n_best,
                      global_scorer=GNMTGlobalScorer(0.0, 0.0, "none", "none"),
                      min_length=0, max_length=max_length, return_attention=False,
                      block_ngram_repeat=0, exclusion_tokens=set(),
                      stepwise_penalty=False, ratio=0.0, ban_unk_token=False)
    beam.initialize(torch.zeros(batch, src.size(1), 4), torch.full((batch,), src.size(1)))
    if scorer is not None:
        beam.dc_state = scorer.start(src, beam_size)
    for step in range(max_length):
        prev = beam.current_predictions.tolist()
        examples = beam.batch_offset.tolist()
        log_probs = torch.stack([step_log_probs(examples[r // beam_size], step, prev[r])
                                 for r in range(len(prev))])
        beam.advance(log_probs, None)
        if any(any(f) for f in beam.is_finished_list):
            beam.update_finished()
            if beam.done:
                break
    return beam.predictions, beam.scores


def test_constraint_picks_the_on_topic_response():
    # vocab: specials, "tea" (on the source's topic and meaning), "ok" (generic)
    tokens = SPECIALS + ["tea", "ok", "drink"]
    TEA, OK, DRINK = 4, 5, 6
    side = side_models({"tea": [1, 0], "drink": [0.8, 0.2], "ok": [0, 1]},
                       {"tea": [1, 0, 0], "drink": [0.6, 0.8, 0], "ok": [0, 0, 1]})
    src = torch.tensor([[DRINK, TEA]])  # the source is about tea
    p = {TEA: 0.35, OK: 0.55, EOS: 0.05, DRINK: 0.05}

    def step_log_probs(example, step, prev):
        if step == 0:
            dist = torch.full((len(tokens),), 1e-6)
            for t, v in p.items():
                dist[t] = v
        else:  # after one word: end the sentence
            dist = torch.full((len(tokens),), 1e-6)
            dist[EOS] = 0.9
        return (dist / dist.sum()).log()

    def best(alpha, beta, beam_size):
        scorer = DCScorer(side, tokens, tokens, alpha, beta, SPECIALS)
        preds, scores = run_beam(step_log_probs, src, scorer, beam_size)
        return preds[0][0].tolist(), float(scores[0][0])

    for beam_size in (1, 2):  # beam 1: only the per-step (partial) scores can save "tea"
        assert best(0.0, 0.0, beam_size)[0] == [OK, EOS]  # likelihood alone: generic
        assert best(1.5, 0.0, beam_size)[0] == [TEA, EOS]  # topic pulls towards the source
        assert best(0.0, 2.0, beam_size)[0] == [TEA, EOS]  # meaning pulls as well
    # the score of the finished hypothesis is the formula, with the cosines by hand
    s_topic = np.array([1.8, 0.2]) / np.linalg.norm([1.8, 0.2])
    s_sif = np.array([1.6, 0.8, 0]) / np.linalg.norm([1.6, 0.8, 0])
    logp = step_log_probs(0, 0, BOS)[TEA] + step_log_probs(0, 1, TEA)[EOS]
    pred, score = best(1.5, 2.0, 2)
    assert pred == [TEA, EOS]
    assert score == pytest.approx(float(logp) + 1.5 * s_topic[0] + 2.0 * s_sif[0], abs=1e-5)
    # a weak constraint leaves the likelihood's choice: the sign of the effect is the formula's
    gain = 0.2 * (s_topic[0] - 0) + 0.0
    assert gain < np.log(p[OK] / p[TEA])
    assert best(0.2, 0.0, 2)[0] == [OK, EOS]


def test_beam_scores_equal_formula_recomputed_from_scratch():
    """Random log-probs, batch of 3 sources finishing at different steps, beam 4."""
    g = torch.Generator().manual_seed(0)
    V, K, D = 12, 3, 5
    tokens = SPECIALS + ["w%d" % i for i in range(V - 4)]
    rng = np.random.default_rng(0)
    topic = {w: rng.dirichlet(np.ones(K)) for w in tokens[4:9]}  # some words: no topic
    sif = {w: rng.normal(size=D) for w in tokens[4:]}
    side = side_models(topic, sif)
    table = torch.randn(3, 8, V, V, generator=g).log_softmax(-1)  # [example, step, prev]
    table[1, :, :, EOS] += 2.0  # example 1 tends to finish early
    src = torch.tensor([[4, 5, 6, PAD], [7, 8, 9, 10], [11, 4, PAD, PAD]])
    alpha, beta = 0.7, 1.3
    scorer = DCScorer(side, tokens, tokens, alpha, beta, SPECIALS)
    preds, scores = run_beam(lambda e, s, p: table[e, s, p].clone(), src, scorer, 4,
                             max_length=7, n_best=4)

    def vec(words, kind):
        rows = [side.p_topic_given_word[side.topic_index[tokens[w]]] if kind == "t" else
                side.sif_dirs[side.sif_index[tokens[w]]]
                for w in words if w > EOS and tokens[w] in
                (side.topic_index if kind == "t" else side.sif_index)]
        return np.sum(rows, 0) if rows else None

    def cos(a, b):
        if a is None or b is None:
            return 0.0
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    checked = 0
    for ex in range(3):
        for pred, score in zip(preds[ex], scores[ex]):
            words = pred.tolist()
            prev, logp = BOS, 0.0
            for step, w in enumerate(words):
                logp += float(table[ex, step, prev, w])
                prev = w
            body = [w for w in words if w != EOS]
            s = src[ex].tolist()
            want = (logp + alpha * cos(vec(s, "t"), vec(body, "t"))
                    + beta * cos(vec(s, "s"), vec(body, "s")))
            assert float(score) == pytest.approx(want, abs=1e-4)
            checked += 1
    assert checked == 12


def test_zero_weights_leave_the_stock_beam_bit_identical():
    g = torch.Generator().manual_seed(1)
    V = 10
    tokens = SPECIALS + ["w%d" % i for i in range(V - 4)]
    rng = np.random.default_rng(1)
    side = side_models({w: rng.dirichlet(np.ones(3)) for w in tokens[4:]},
                       {w: rng.normal(size=4) for w in tokens[4:]})
    table = torch.randn(2, 8, V, V, generator=g).log_softmax(-1)
    src = torch.tensor([[4, 5, 6], [7, 8, PAD]])
    lp = lambda e, s, p: table[e, s, p].clone()  # noqa: E731
    stock = run_beam(lp, src, None, 3, n_best=3)
    zero = run_beam(lp, src, DCScorer(side, tokens, tokens, 0.0, 0.0, SPECIALS), 3,
                    n_best=3)
    for a, b in zip(stock[0], zero[0]):
        assert [t.tolist() for t in a] == [t.tolist() for t in b]
    for a, b in zip(stock[1], zero[1]):
        assert [float(x) for x in a] == [float(x) for x in b]  # exact, not approx
