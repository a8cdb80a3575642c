"""DC and DC-MMI baselines (Baheti et al. 2018): decoding with distributional constraints.

`side_models.py` fits and loads the topic model and SIF embeddings (`python -m
onmt_mirror.dc fit`), `scorer.py` is the batched beam scorer that registration/decoding.py
plugs into the stock onmt_translate beam search (-dc_model, -dc_alpha, -dc_beta), and `tune.py`
grid-searches α and β on the validation set (`python -m onmt_mirror.dc tune`).
"""
