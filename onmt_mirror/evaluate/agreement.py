"""Fleiss' kappa: chance-corrected agreement of a fixed number of raters per item.

Used for the human study (3 annotators label each pair win / loss / tie), as in the
paper's Table 1. Formula from Fleiss (1971).
"""
import numpy as np


def fleiss_kappa(counts):
    """counts [items, categories]: raters per category, same total k >= 2 on every row.

    Returns None where kappa is undefined (every rating in one category).
    """
    counts = np.asarray(counts, dtype=np.float64)
    k = counts.sum(axis=1)
    if len(counts) == 0 or k.min() != k.max() or k[0] < 2:
        raise ValueError("every item needs the same number (>= 2) of ratings")
    k = k[0]
    p_item = ((counts**2).sum(axis=1) - k) / (k * (k - 1))
    p_cat = counts.sum(axis=0) / counts.sum()
    expected = (p_cat**2).sum()
    if np.isclose(expected, 1.0):
        return None
    return float((p_item.mean() - expected) / (1.0 - expected))
