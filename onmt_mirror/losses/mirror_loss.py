"""Eq. 6 assembled from the model's summed terms, and statistics that keep every term.

MirrorModel.forward returns, per batch, summed NLLs of each decoder, the summed KL and the
current KL weight. The loss is

    sum_d w_d * NLL_d + kl_weight * KL,   w_d = 1 / (#decoders predicting the same side)

(1/2 each for Mirror's four decoders, 1 for the CVAE's single one; x-side decoders times
-mirror_backward_weight), summed over the batch; the trainer divides by the number of
sentences (-normalization sents), as the reference normalised per sentence.
"""
import math

import torch
from onmt.utils.logging import logger
from onmt.utils.statistics import Statistics

from onmt_mirror.errors import MirrorError

DECODER_SIDE = {"y_cxz": "y", "x_cz": "x", "x_cyz": "x", "y_cz": "y"}


def decoder_weights(decoders, backward_weight):
    per_side = {s: sum(DECODER_SIDE[d] == s for d in decoders) for s in ("x", "y")}
    return {d: (backward_weight if DECODER_SIDE[d] == "x" else 1.0)
            / per_side[DECODER_SIDE[d]] for d in decoders}


class MirrorStatistics(Statistics):
    """Statistics that also sum Mirror's per-term values (fairseq-style logging outputs).

    The stock fields hold Dec1 p(y|c,z,x) with z from the posterior, so OpenNMT-py's
    "ppl"/"acc" lines, early stopping and TensorBoard keep their meaning. Stock
    Statistics.update overwrites extra fields, so this class replaces onmt.utils.Statistics
    (see registration.py); without terms it behaves exactly like the stock class.
    """

    def __init__(self, *args, terms=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.terms = dict(terms or {})

    def update(self, stat, update_n_src_words=False):
        super().update(stat, update_n_src_words)
        for k, v in getattr(stat, "terms", {}).items():
            if k == "kl_weight":
                self.terms[k] = v  # a setting, not a sum: keep the latest
            else:
                self.terms[k] = self.terms.get(k, 0.0) + v

    def mirror_summary(self):
        """Per-decoder perplexity, KL per sentence, KL weight, as a dict of floats."""
        t = self.terms
        out = {}
        for d, side in DECODER_SIDE.items():
            n = t.get("n_" + side, 0.0)
            if "nll_" + d in t and n:
                out["ppl_" + d] = math.exp(min(t["nll_" + d] / n, 100))
        if "nll_y_cxz_prior" in t and t.get("n_y"):
            out["ppl_y_cxz_prior"] = math.exp(min(t["nll_y_cxz_prior"] / t["n_y"], 100))
        if t.get("n_sents"):
            out["kl"] = t["kl"] / t["n_sents"]
        if "kl_weight" in t:
            out["kl_weight"] = t["kl_weight"]
        return out

    def output(self, step, num_steps, learning_rate, start):
        if not self.n_words:  # every batch since the last report was skipped
            logger.info("Step %d/%5d; no batch to report (skipped: non-finite loss)",
                        step, num_steps)
            return
        super().output(step, num_steps, learning_rate, start)
        summary = self.mirror_summary()
        if summary:
            logger.info("Mirror step %d; %s", step, "; ".join(
                "%s: %.4g" % kv for kv in summary.items()))

    def log_tensorboard(self, prefix, writer, learning_rate, patience, step):
        super().log_tensorboard(prefix, writer, learning_rate, patience, step)
        for k, v in self.mirror_summary().items():
            writer.add_scalar("%s/mirror_%s" % (prefix, k), v, step)


class MirrorLoss(torch.nn.Module):
    """Called by the stock Trainer as loss(batch, output, attns, ...) -> (loss, stats)."""

    def __init__(self, decoders, backward_weight, padding_idx):
        super().__init__()
        self.weights = decoder_weights(decoders, backward_weight)
        self._padding_idx = padding_idx
        # numerical guards; registration.py sets them from the options (R6, R7)
        self.nonfinite = "stop"  # or "skip" (-mirror_nonfinite)
        self.kl_collapse_threshold, self.kl_collapse_steps = 0.0, 0  # 0 steps: off
        self.low_kl_batches = 0
        self.step_of = None  # callable -> the Trainer's step, for messages

    @property
    def padding_idx(self):  # the Trainer reads it to count target tokens
        return self._padding_idx

    def forward(self, batch, output, attns, trunc_start=0, trunc_size=None):
        t = attns["mirror"]
        loss = t["kl_weight"] * t["kl"]
        for d, w in self.weights.items():
            loss = loss + w * t["nll_" + d]
        # device terms fetched in one transfer: one host sync per batch, not one each
        on_device = [k for k, v in t.items() if torch.is_tensor(v)]
        terms = {k: float(v) for k, v in t.items() if not torch.is_tensor(v)}
        if on_device:
            values = torch.stack([t[k].detach().float().reshape(()) for k in on_device])
            terms.update(zip(on_device, values.tolist()))
        bad = [k for k, v in terms.items() if not math.isfinite(v)]
        if bad:
            return self.non_finite(terms, bad)
        if self.training:
            self.watch_kl(terms["kl"] / max(terms["n_sents"], 1.0))
        stats = MirrorStatistics(terms["nll_y_cxz"], 1, terms["n_sents"], terms["n_y"],
                                 terms["correct_y_cxz"], terms=terms)
        return loss, stats

    def where(self):
        step = "step %d" % self.step_of() if self.step_of is not None else "a batch"
        return step if self.training else "validation at " + step

    def non_finite(self, terms, bad):
        """Stop (default) or skip the batch: loss None makes the stock Trainer skip
        backward, so optim.step() finds no gradients and leaves every weight and the
        optimizer state as they were (only the step counter and schedule advance)."""
        values = ", ".join("%s=%s" % (k, terms[k]) for k in bad)
        if self.nonfinite == "skip" and self.training:
            logger.warning("%s: non-finite loss term(s) %s: batch skipped "
                           "(-mirror_nonfinite skip)", self.where(), values)
            return None, MirrorStatistics()
        raise MirrorError("%s: non-finite loss term(s) %s; stopped before updating the "
                          "weights (-mirror_nonfinite skip skips such batches)"
                          % (self.where(), values))

    def watch_kl(self, kl_per_sentence):
        """Warn once per streak of -mirror_kl_collapse_steps training batches whose KL
        per sentence stays under -mirror_kl_collapse_threshold (posterior collapse)."""
        if self.kl_collapse_steps <= 0 or kl_per_sentence >= self.kl_collapse_threshold:
            self.low_kl_batches = 0
            return
        self.low_kl_batches += 1
        if self.low_kl_batches == self.kl_collapse_steps:
            logger.warning("%s: KL collapse: KL(q||p) per sentence has stayed under %g "
                           "for %d training batches (now %.4g): z carries almost no "
                           "information", self.where(), self.kl_collapse_threshold,
                           self.kl_collapse_steps, kl_per_sentence)
