"""Eq. 6 assembled from the model's summed terms, and statistics that keep every term.

MirrorModel.forward returns, per batch, summed NLLs of each decoder, the summed KL and the
current KL weight. The loss is

    sum_d w_d * NLL_d + kl_weight * KL,   w_d = 1 / (#decoders predicting the same side)

(1/2 each for Mirror's four decoders, 1 for the CVAE's single one; x-side decoders times
-mirror_backward_weight), summed over the batch; the trainer divides by the number of
sentences (-normalization sents), as the reference normalised per sentence. The latent
remedies add bow_weight * (NLL_bow_x + NLL_bow_y) and, with free bits, put the thresholded
KL in place of KL (the log keeps the true KL).
"""
import collections
import math
import time

import torch
from onmt.utils.logging import logger
from onmt.utils.statistics import Statistics

from onmt_mirror.errors import MirrorError
from onmt_mirror.opts import DECODERS


def decoder_weights(decoders, backward_weight):
    sides = {d: DECODERS[d].target for d in decoders}
    per_side = {s: sum(side == s for side in sides.values()) for s in ("x", "y")}
    return {d: (backward_weight if side == "x" else 1.0) / per_side[side]
            for d, side in sides.items()}


class MirrorStatistics(Statistics):
    """Statistics that also sum Mirror's per-term values (fairseq-style logging outputs).

    The stock fields hold Dec1 p(y|c,z,x) with z from the posterior, so OpenNMT-py's
    "ppl"/"acc" lines, early stopping and TensorBoard keep their meaning. Stock
    Statistics.update overwrites extra fields, so this class replaces onmt.utils.Statistics
    (see registration/loss.py); without terms it behaves exactly like the stock class.
    """

    def __init__(self, *args, terms=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.terms = dict(terms or {})

    ACTIVE_UNIT_VARIANCE = 0.01  # Burda et al. 2016's threshold
    _last_report = {}  # the previous training report's (step, time), for steps/s

    def update(self, stat, update_n_src_words=False):
        super().update(stat, update_n_src_words)
        for k, v in getattr(stat, "terms", {}).items():
            if k == "kl_weight":
                self.terms[k] = v  # a setting, not a sum: keep the latest
            elif isinstance(v, list):  # per-dimension sums
                old = self.terms.get(k) or [0.0] * len(v)
                self.terms[k] = [a + b for a, b in zip(old, v)]
            else:
                self.terms[k] = self.terms.get(k, 0.0) + v

    def mirror_summary(self):
        """Per-decoder perplexity, KL per sentence, KL weight and, from validation, the
        latent diagnostics (active units, MI, the importance-weighted NLL), as floats."""
        t = self.terms
        out = {}
        for d, spec in DECODERS.items():
            n = t.get("n_" + spec.target, 0.0)
            if "nll_" + d in t and n:
                out["ppl_" + d] = math.exp(min(t["nll_" + d] / n, 100))
        if "nll_y_cxz_prior" in t and t.get("n_y"):
            out["ppl_y_cxz_prior"] = math.exp(min(t["nll_y_cxz_prior"] / t["n_y"], 100))
        n = t.get("n_sents")
        if n:
            out["kl"] = t["kl"] / n
            for side in "xy":  # BoW words: the utterance without </s>
                if "nll_bow_" + side in t and t.get("n_" + side, 0.0) > n:
                    out["ppl_bow_" + side] = math.exp(min(
                        t["nll_bow_" + side] / (t["n_" + side] - n), 100))
            if "mu_q_sum" in t:
                out["active_units"] = sum(
                    sq / n - (s / n) ** 2 > self.ACTIVE_UNIT_VARIANCE
                    for s, sq in zip(t["mu_q_sum"], t["mu_q_sumsq"]))
                out["mi"] = t["mi"] / n
            if "iw_nll" in t:
                out["iw_nll"] = t["iw_nll"] / n
                out["ppl_iw"] = math.exp(min(t["iw_nll"] / t["n_y"], 100))
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
            logger.info("Mirror step %d; %s%s", step, "; ".join(
                "%s: %.4g" % kv for kv in summary.items()), self.progress(step, num_steps))

    @classmethod
    def progress(cls, step, num_steps):
        """"; 3.1 steps/s; ETA 0:12:05" since the previous report (empty at the first)."""
        now = time.time()
        last = cls._last_report
        cls._last_report = {"step": step, "time": now}
        if not last or step <= last["step"] or now <= last["time"]:
            return ""
        rate = (step - last["step"]) / (now - last["time"])
        eta = int(max(num_steps - step, 0) / rate)
        return "; %.3g steps/s; ETA %d:%02d:%02d" % (rate, eta // 3600, eta // 60 % 60,
                                                    eta % 60)

    def log_tensorboard(self, prefix, writer, learning_rate, patience, step):
        super().log_tensorboard(prefix, writer, learning_rate, patience, step)
        for k, v in self.mirror_summary().items():
            writer.add_scalar("%s/mirror_%s" % (prefix, k), v, step)


class MirrorLoss(torch.nn.Module):
    """Called by the stock Trainer as loss(batch, output, attns, ...) -> (loss, stats)."""

    def __init__(self, decoders, backward_weight, padding_idx, bow_weight=0.0,
                 select="posterior"):
        super().__init__()
        self.weights = decoder_weights(decoders, backward_weight)
        self.bow_weight = bow_weight
        self.select = select  # what the validation perplexity measures (-mirror_select)
        self._padding_idx = padding_idx
        # numerical guards; registration/loss.py sets them from the options (and
        # registration/checkpoints.py gives step_of, for the error lines)
        self.nonfinite = "stop"  # or "skip" (-mirror_nonfinite)
        self.kl_collapse_threshold, self.kl_collapse_steps = 0.0, 0  # 0 steps: off
        self.recent_kl = collections.deque()
        self.kl_warned = False
        self.step_of = None  # callable -> the Trainer's step, for messages

    @property
    def padding_idx(self):  # the Trainer reads it to count target tokens
        return self._padding_idx

    def total(self, t):
        """Eq. 6 (and the bag-of-words terms) from the model's per-term sums, on the device."""
        loss = t["kl_weight"] * t.get("kl_loss", t["kl"])
        for d, w in self.weights.items():
            loss = loss + w * t["nll_" + d]
        for side in "xy":
            if "nll_bow_" + side in t:
                loss = loss + self.bow_weight * t["nll_bow_" + side]
        return loss

    def forward(self, batch, output, attns, trunc_start=0, trunc_size=None):
        t = attns["mirror"]
        stats = self.statistics(self.fetch(t))
        if stats is None:  # skipped: no backward, so no weight changes
            return None, MirrorStatistics()
        return self.total(t), stats

    def statistics(self, terms):
        """A batch's terms on the host -> its MirrorStatistics, after the numerical guards:
        a non-finite term stops training (MirrorError) or, with -mirror_nonfinite skip,
        gives None (the batch is skipped)."""
        bad = [k for k, v in terms.items()
               if not all(map(math.isfinite, v if isinstance(v, list) else [v]))]
        if bad:
            return self.non_finite(terms, bad)
        if self.training:
            self.watch_kl(terms["kl"] / max(terms["n_sents"], 1.0))
        return MirrorStatistics(self.reported_nll(terms), 1, terms["n_sents"],
                                terms["n_y"], terms["correct_y_cxz"], terms=terms)

    @staticmethod
    def fetch(t):
        """Device terms fetched in one transfer (one host sync per batch, not one
        each): scalars as floats, per-dimension vectors as lists."""
        on_device = [k for k, v in t.items() if torch.is_tensor(v)]
        terms = {k: float(v) for k, v in t.items() if not torch.is_tensor(v)}
        if on_device:
            flat = [t[k].detach().float().reshape(-1) for k in on_device]
            values = torch.cat(flat).tolist()
            for k, v in zip(on_device, flat):
                n = v.numel()
                terms[k] = values[:n] if t[k].dim() else values[0]
                values = values[n:]
        return terms

    def reported_nll(self, terms):
        """The NLL behind the stock perplexity: Dec1 with the posterior mean in training;
        in validation what -mirror_select names (the stock line, early stopping and
        -mirror_keep_best then all follow it)."""
        if self.training or self.select == "posterior":
            return terms["nll_y_cxz"]
        if self.select == "prior":
            return terms["nll_y_cxz_prior"]
        return terms["nll_y_cxz"] + terms["kl"]  # "elbo": -log p(y|c,x) <= NLL + KL

    def where(self):
        step = "step %d" % self.step_of() if self.step_of is not None else "a batch"
        return step if self.training else "validation at " + step

    def non_finite(self, terms, bad):
        """Stop (default) or skip the batch (None): the stock Trainer then skips backward,
        so optim.step() finds no gradients and leaves every weight and the optimizer
        state as they were (only the step counter and schedule advance)."""
        values = ", ".join("%s=%s" % (k, terms[k]) for k in bad)
        if self.nonfinite == "skip" and self.training:
            logger.warning("%s: non-finite loss term(s) %s: batch skipped "
                           "(-mirror_nonfinite skip)", self.where(), values)
            return None
        raise MirrorError("%s: non-finite loss term(s) %s; stopped before updating the "
                          "weights (-mirror_nonfinite skip skips such batches)"
                          % (self.where(), values))

    def watch_kl(self, kl_per_sentence):
        """Warn when the mean KL per sentence over the last -mirror_kl_collapse_steps
        training batches is under -mirror_kl_collapse_threshold (posterior collapse); a
        moving mean, so one batch above the threshold does not hide a collapse. Once
        per collapse: it warns again only after the mean has risen above the threshold."""
        n = self.kl_collapse_steps
        if n <= 0:
            return
        self.recent_kl.append(kl_per_sentence)
        if len(self.recent_kl) > n:
            self.recent_kl.popleft()
        mean = sum(self.recent_kl) / len(self.recent_kl)
        if mean >= self.kl_collapse_threshold:
            self.kl_warned = False
        elif len(self.recent_kl) == n and not self.kl_warned:
            self.kl_warned = True
            logger.warning("%s: KL collapse: KL(q||p) per sentence has averaged %.4g over "
                           "the last %d training batches, under %g: z carries almost no "
                           "information (docs/latent.md: remedies)", self.where(), mean,
                           n, self.kl_collapse_threshold)

    def check_validation_kl(self, summary, step):
        """The same warning at each validation, so that short runs see it too."""
        kl = summary.get("kl")
        if self.kl_collapse_steps > 0 and kl is not None \
                and kl < self.kl_collapse_threshold:
            logger.warning("validation at step %d: KL collapse: KL(q||p) per sentence is "
                           "%.4g, under %g: z carries almost no information "
                           "(docs/latent.md: remedies)", step, kl,
                           self.kl_collapse_threshold)
