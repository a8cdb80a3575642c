"""Re-ranking of onmt_translate n-best lists: MMI-bidi (Li et al., 2016) and Mirror-Dec3.

`nbest` reads n-best lists and score caches and holds the formula and the grid search;
`scorer` computes sequence log-probabilities with checkpoints; `python -m
onmt_mirror.rerank` is the command line (see docs/baselines.md).
"""
