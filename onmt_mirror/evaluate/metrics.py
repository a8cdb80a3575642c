"""Word-overlap and diversity metrics, computed exactly as the Mirror paper's evaluator did.

Faithful to cszmli/mirror-sigir `evaluators.py`: NLTK's RegexpTokenizer with the pattern
below (case kept), NLTK corpus BLEU with SmoothingFunction().method1 and one reference,
BLEU-3 with the weights (0.33, 0.33, 0.33, 0) that code used (not 1/3), Distinct-n as
unique / total n-grams over the whole output. sacrebleu's corpus BLEU (its own 13a
tokenisation) is added as the standard reference point. All scores are fractions in [0, 1].
"""
from collections import Counter

from nltk.tokenize import RegexpTokenizer
from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

TOKEN_PATTERN = r"\w+|#\w+|<\w+>|%\w+|[^\w\s]+"
BLEU_WEIGHTS = {
    "bleu1": (1, 0, 0, 0),
    "bleu2": (0.5, 0.5, 0, 0),
    "bleu3": (0.33, 0.33, 0.33, 0),  # as in the paper's code; 1/3 would differ slightly
    "bleu4": (0.25, 0.25, 0.25, 0.25),
}

tokenize = RegexpTokenizer(TOKEN_PATTERN).tokenize


def bleu(refs, hyps):
    """{'bleu1'..'bleu4': corpus BLEU} of token lists against one reference each."""
    references = [[r] for r in refs]
    smooth = SmoothingFunction().method1
    return {
        name: corpus_bleu(references, hyps, weights=w, smoothing_function=smooth)
        for name, w in BLEU_WEIGHTS.items()
    }


def sacrebleu_score(ref_lines, hyp_lines):
    """sacrebleu corpus BLEU on the raw lines (default 13a tokeniser), as a fraction."""
    import sacrebleu

    # force: test sets here are tokenised already; sacrebleu would only warn about it
    return sacrebleu.corpus_bleu(hyp_lines, [ref_lines], force=True).score / 100.0


def distinct(hyps, n):
    """Unique n-grams / all n-grams over every hypothesis together (0 when there are none)."""
    grams = [tuple(h[i : i + n]) for h in hyps for i in range(len(h) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def top_share(hyp_lines, k=10):
    """Share of outputs that are one of the k most frequent responses ("I don't know" rate)."""
    counts = Counter(line.strip() for line in hyp_lines)
    top = counts.most_common(k)
    return sum(c for _, c in top) / max(len(hyp_lines), 1), top


def overlap_metrics(ref_lines, hyp_lines):
    """Every metric of this module for one system, as a flat dict."""
    refs = [tokenize(line) for line in ref_lines]
    hyps = [tokenize(line) for line in hyp_lines]
    share, top = top_share(hyp_lines)
    scores = bleu(refs, hyps)
    scores.update(
        sacrebleu=sacrebleu_score(ref_lines, hyp_lines),
        distinct1=distinct(hyps, 1),
        distinct2=distinct(hyps, 2),
        avg_len=sum(map(len, hyps)) / max(len(hyps), 1),
        top10_share=share,
        top10=[[response, count] for response, count in top],
    )
    return scores
