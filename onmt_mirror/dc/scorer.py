"""DC's beam scorer: the distributional constraints of Baheti et al. 2018 inside the beam.

    score(y) = log p(y | source) + α · sim_topic(source, y) + β · sim_semantic(source, y)

Both similarities are cosines between sums of per-word vectors (see `side_models.py`), so
for a partial hypothesis y_1..t kept in the beam we carry its running sum h (one row per
beam), and the similarity of every one-word extension y_1..t w is one matrix product over
the vocabulary:

    cos(s, h + e_w) = (s·h + s·e_w) / |h + e_w|,   |h + e_w|² = |h|² + 2 h·e_w + |e_w|²

with s the unit source vector, s·e_w precomputed per source ([B, V]) and |e_w|² per word.
The beam's cumulative score then telescopes: adding α·Δsim_topic + β·Δsim_semantic, the
change from y_1..t to y_1..t w, to each candidate's log-prob makes the running score of
every partial (and finished) hypothesis exactly log p(y_1..t) + α sim_topic + β sim_sem.
End-of-sentence and special tokens have zero vectors, so finishing adds nothing. α = β = 0
adds exact zeros: the stock beam's choices and scores are unchanged bit for bit.
"""
import torch

EPS = 1e-8


class DCScorer:
    """Per-vocabulary tables, built once per onmt_translate run."""

    def __init__(self, side, src_tokens, tgt_tokens, alpha, beta, specials=()):
        self.alpha, self.beta = float(alpha), float(beta)
        self.side = side

        def tables(tokens):
            topic, sif = side.vocab_tables(tokens)
            topic, sif = torch.from_numpy(topic), torch.from_numpy(sif)
            special = [i for i, t in enumerate(tokens)
                       if t in specials or t.startswith("｟")]
            topic[special] = 0
            sif[special] = 0
            return {"topic": topic, "sif": sif}

        self.tgt = tables(tgt_tokens)
        self.src = self.tgt if list(src_tokens) == list(tgt_tokens) else tables(src_tokens)
        self.tgt_sq = {k: (v ** 2).sum(1) for k, v in self.tgt.items()}  # [V]
        self.tgt_t = {k: v.t().contiguous() for k, v in self.tgt.items()}  # [dim, V]
        self.device = torch.device("cpu")

    def to(self, device):
        if device != self.device:
            move = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
            same = self.src is self.tgt
            self.tgt, self.tgt_sq, self.tgt_t = (move(self.tgt), move(self.tgt_sq),
                                                 move(self.tgt_t))
            self.src = self.tgt if same else move(self.src)
            self.device = device
        return self

    def coverage(self):
        """How many target-vocabulary words have a topic / SIF vector (for the log)."""
        return {k: int((v.abs().sum(1) > 0).sum()) for k, v in self.tgt.items()}

    def start(self, src, beam_size):
        """A per-batch state; src [B, L] token ids (padding has zero vectors)."""
        self.to(src.device)
        return DCBeamState(self, src, beam_size)


class DCBeamState:
    """Running sums and similarities of the B x beam hypotheses of one batch."""

    def __init__(self, scorer, src, beam_size):
        self.scorer, self.beam = scorer, beam_size
        self.parts = ("topic", "sif")  # both even at weight 0: then they add exact zeros
        self.weight = {"topic": scorer.alpha, "sif": scorer.beta}
        self.src_unit, self.src_proj, self.hyp, self.sim = {}, {}, {}, {}
        rows = src.size(0) * beam_size
        for k in self.parts:
            s = scorer.src[k][src].sum(1)  # [B, dim]
            s = s / s.norm(dim=1, keepdim=True).clamp_min(EPS)
            self.src_unit[k] = s
            self.src_proj[k] = s @ scorer.tgt_t[k]  # [B, V]: s · e_w
            self.hyp[k] = torch.zeros(rows, s.size(1), device=src.device)
            self.sim[k] = torch.zeros(rows, device=src.device)
        self.cand = {}

    def candidate_sims(self, k):
        """[B x beam, V]: similarity of each hypothesis extended by each word."""
        h, table_t = self.hyp[k], self.scorer.tgt_t[k]  # [B*beam, dim], [dim, V]
        B = self.src_unit[k].size(0)
        s_h = (h.view(B, self.beam, -1) * self.src_unit[k][:, None]).sum(-1)  # [B, beam]
        # 1 / |h + e_w| = (|e_w|² + 2 h·e_w + |h|²)^-1/2, in place: one matmul, 3 passes
        inv_norm = torch.addmm(self.scorer.tgt_sq[k][None, :], h, table_t, alpha=2)
        inv_norm.add_((h * h).sum(1, keepdim=True)).clamp_(min=EPS * EPS).rsqrt_()
        num = s_h[:, :, None] + self.src_proj[k][:, None, :]  # [B, beam, V]: s·(h + e_w)
        return num.view(B * self.beam, -1).mul_(inv_norm)

    def bonus(self):
        """[B x beam, V]: α Δsim_topic + β Δsim_semantic for every candidate next word."""
        total, prev = None, 0
        for k in self.parts:
            self.cand[k] = self.candidate_sims(k)
            if total is None:
                total = self.cand[k] * self.weight[k]
            else:
                total.add_(self.cand[k], alpha=self.weight[k])
            prev = prev + self.weight[k] * self.sim[k]
        return total.sub_(prev[:, None])

    def advance(self, select_indices, next_ids):
        """Follow the beam: rows reordered by select_indices, each extended by next_ids."""
        for k in self.parts:
            self.hyp[k] = self.hyp[k][select_indices] + self.scorer.tgt[k][next_ids]
            self.sim[k] = self.cand[k][select_indices, next_ids]
        self.cand = {}

    def keep_batches(self, keep):
        """Drop finished examples (keep: indices of the examples still decoding)."""
        keep = keep.to(self.sim[self.parts[0]].device)
        for k in self.parts:
            B = self.src_unit[k].size(0)
            self.src_unit[k] = self.src_unit[k][keep]
            self.src_proj[k] = self.src_proj[k][keep]
            self.hyp[k] = self.hyp[k].view(B, self.beam, -1)[keep].flatten(0, 1)
            self.sim[k] = self.sim[k].view(B, self.beam)[keep].flatten()


def dc_scorer_from_opt(opt, vocabs, logger=None):
    """The scorer for onmt_translate's options, or None without -dc_model."""
    folder = getattr(opt, "dc_model", None)
    if not folder:
        return None
    from onmt.constants import DefaultTokens

    from onmt_mirror.dc.side_models import SideModels
    from onmt_mirror.errors import MirrorError

    if getattr(opt, "random_sampling_topk", 0) != 0 or \
            getattr(opt, "random_sampling_topp", 0) != 0:
        raise MirrorError("-dc_model constrains beam search: drop -random_sampling_topk/"
                          "-random_sampling_topp")
    side = SideModels.load(folder)
    specials = {DefaultTokens.PAD, DefaultTokens.BOS, DefaultTokens.EOS, DefaultTokens.UNK}
    scorer = DCScorer(side, vocabs["src"].ids_to_tokens, vocabs["tgt"].ids_to_tokens,
                      opt.dc_alpha, opt.dc_beta, specials)
    if logger is not None:
        cov = scorer.coverage()
        logger.info("DC decoding: alpha %g (topic), beta %g (SIF) with %s; target words "
                    "with a topic vector %d, with a SIF vector %d of %d"
                    % (scorer.alpha, scorer.beta, folder, cov["topic"], cov["sif"],
                       len(vocabs["tgt"].ids_to_tokens)))
    return scorer
