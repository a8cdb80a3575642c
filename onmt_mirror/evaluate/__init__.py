"""One evaluator for every system: automatic metrics, a pairwise judge and a human-evaluation kit.

Scores from different codebases are not comparable (BLEU smoothing alone moves them by
points), so every system is scored here, by the same code. Entry points:

    python -m onmt_mirror.evaluate            automatic metrics table   (automatic.py)
    python -m onmt_mirror.evaluate.pairwise   embedding judge, Table 1  (pairwise.py)
    python -m onmt_mirror.evaluate.human_kit  annotation pages + aggregation (human_kit.py)

This file stays import-free so that `python -m` on a submodule stays cheap. See
docs/evaluation.md.
"""
