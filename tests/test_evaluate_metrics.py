"""BLEU / Distinct / length / top-10 share: hand-computed values and NLTK itself as the oracle."""
import math
import random

import pytest
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

from onmt_mirror.evaluate.metrics import bleu, distinct, overlap_metrics, tokenize, top_share


def test_tokenizer_keeps_case_and_splits_punctuation():
    assert tokenize("Hi, I'm <unk> #tag 50%off!?") == [
        "Hi", ",", "I", "'", "m", "<unk>", "#tag", "50", "%off", "!?"]


def test_identical_hypothesis_scores_one():
    lines = ["the cat sat on the mat .", "where do you live ?"]
    scores = overlap_metrics(lines, lines)
    for key in ("bleu1", "bleu2", "bleu3", "bleu4", "sacrebleu"):
        assert scores[key] == pytest.approx(1.0, abs=1e-12), key


def test_bleu_hand_computed():
    # 1-grams 5/6, 2-grams 3/5, 3-grams 2/4, 4-grams 1/3, equal lengths so no brevity penalty
    s = bleu([tokenize("the cat sat on the mat")], [tokenize("the cat sat on a mat")])
    assert s["bleu1"] == pytest.approx(5 / 6, abs=1e-12)
    assert s["bleu2"] == pytest.approx(math.sqrt(0.5), abs=1e-12)
    assert s["bleu3"] == pytest.approx(0.25 ** 0.33, abs=1e-12)  # the paper code's 0.33 weights
    assert s["bleu4"] == pytest.approx((1 / 12) ** 0.25, abs=1e-12)


def test_bleu_brevity_penalty_and_method1_smoothing():
    # 2 of 6 tokens: BP = exp(1 - 6/2); no 3-/4-grams, so method1 gives them 0.1 / 1
    s = bleu([tokenize("the cat sat on the mat")], [tokenize("the cat")])
    assert s["bleu2"] == pytest.approx(math.exp(-2), abs=1e-12)
    assert s["bleu4"] == pytest.approx(math.exp(-2) * 0.1 ** 0.5, abs=1e-12)


def test_bleu_matches_nltk_on_a_random_corpus():
    rng = random.Random(7)
    words = "i you the a is not know do what where yes no ok fine thanks".split()
    refs = [[rng.choice(words) for _ in range(rng.randint(1, 12))] for _ in range(200)]
    hyps = [[rng.choice(words) for _ in range(rng.randint(0, 12))] for _ in range(200)]
    ours = bleu(refs, hyps)
    smooth = SmoothingFunction().method1
    weights = {"bleu1": (1, 0, 0, 0), "bleu2": (0.5, 0.5, 0, 0),
               "bleu3": (0.33, 0.33, 0.33, 0), "bleu4": (0.25,) * 4}
    for key, w in weights.items():
        expected = corpus_bleu([[r] for r in refs], hyps, weights=w, smoothing_function=smooth)
        assert abs(ours[key] - expected) < 1e-9, key
    assert 0 < ours["bleu4"] < ours["bleu1"] < 1


def test_distinct_over_the_whole_output():
    hyps = [["a", "b", "a"], ["a", "b"]]
    assert distinct(hyps, 1) == pytest.approx(2 / 5)  # a b a a b
    assert distinct(hyps, 2) == pytest.approx(2 / 3)  # (a b) (b a) (a b)
    assert distinct([[]], 2) == 0.0


def test_top10_share_and_average_length():
    lines = ["i don't know ."] * 5 + ["reply %d" % i for i in range(10)]
    share, top = top_share(lines)
    assert share == pytest.approx(14 / 15)
    assert top[0] == ("i don't know .", 5)
    scores = overlap_metrics(lines, lines)
    assert scores["avg_len"] == pytest.approx((5 * 6 + 10 * 2) / 15)  # i don ' t know . = 6
