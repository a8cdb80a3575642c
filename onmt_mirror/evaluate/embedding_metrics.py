"""Embedding Average, Extrema and Greedy matching between each hypothesis and its reference.

Follows the Mirror code's `embedding_metrics.py` (after Liu et al., 2016): whitespace
tokens, Average = cosine of mean vectors, Extrema = cosine of the per-dimension value of
largest magnitude, Greedy one-way = for each reference word the best cosine over the
hypothesis words, averaged; mean over examples with a 95% interval 1.96·std/√n.
One deliberate change: that code dropped an example when the *hypothesis* had no known
word, which flatters systems that emit empty or out-of-vocabulary lines; here such an
example scores 0, and only examples whose reference has no known word are left out.
"""
import numpy as np


def _cosine(a, b):
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else 0.0


def _extrema(m):
    top, bottom = m.max(axis=0), m.min(axis=0)
    return np.where(np.abs(bottom) <= top, top, bottom)


def _unit_rows(m):
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norms > 0, norms, 1.0)


def average(hyp, ref):
    """hyp [k, d], ref [m, d] word vectors -> cosine of their means."""
    return _cosine(hyp.mean(axis=0), ref.mean(axis=0))


def extrema(hyp, ref):
    return _cosine(_extrema(hyp), _extrema(ref))


def greedy(hyp, ref):
    """Mean over reference words of the best cosine with any hypothesis word (one-way)."""
    sims = _unit_rows(ref) @ _unit_rows(hyp).T  # [m, k]
    return float(sims.max(axis=1).mean())


METHODS = {"emb_average": average, "emb_extrema": extrema, "emb_greedy": greedy}


def embedding_metrics(vectors, ref_lines, hyp_lines):
    """Mean, 95% half-interval and example count of each method for one system."""
    scores = {name: [] for name in METHODS}
    for ref_line, hyp_line in zip(ref_lines, hyp_lines):
        ref = vectors.sentence(ref_line.split())
        if not len(ref):
            continue
        hyp = vectors.sentence(hyp_line.split())
        for name, method in METHODS.items():
            scores[name].append(method(hyp, ref) if len(hyp) else 0.0)
    out = {"emb_n": len(scores["emb_average"]), "vectors": vectors.description}
    for name, values in scores.items():
        values = np.asarray(values)
        n = max(len(values), 1)
        out[name] = float(values.mean()) if len(values) else 0.0
        out[name + "_ci95"] = float(1.96 * values.std() / np.sqrt(n)) if len(values) else 0.0
    return out
