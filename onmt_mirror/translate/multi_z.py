"""Decoding with K samples of the latent z, re-ranked with the backward decoder.

Beam search from the prior mean gives one reply per input, while z is meant to carry what
the reply is about. K samples z_1..z_K ~ p(z|c) decode to K n-best lists, and the backward
decoder Dec3 tells which candidate answers the query x (the paper's idea, made explicit at
decoding time):

    score(y) = log p(y | c, x, z_k) + λ · log p(x | c, z_k, y) + γ · |y|

z_k is the sample y was decoded with; both terms are teacher-forced sums with </s>
(onmt_mirror/rerank/scorer.py), and the formula is MMI-bidi's (onmt_mirror/rerank/nbest.py).

OpenNMT-py's beam search keeps one beam per batch row and knows no latent, so the batch is
tiled K times (input b's copies are rows b*K .. b*K+K-1) and the decoding interface draws a
z per row. Each input's K n-best lists are then joined sample by sample (K x n_best
candidates, rank k*n_best + n), or re-ranked down to n_best. registration/decoding.py calls
this around Translator.translate_batch.
"""
import torch
from onmt.constants import DefaultTokens
from torch.nn.utils.rnn import pad_sequence

from onmt_mirror.errors import MirrorError
from onmt_mirror.rerank.nbest import ScoreWriter, mmi_score
from onmt_mirror.rerank.scorer import as_read_by_dec3, mirror_log_prob

# candidates teacher-forced at once: their (candidates x length x vocabulary) log-probs
# are the largest tensor (128 x 40 tokens x 20k words in fp32: 400 MB)
SCORE_CHUNK = 128


class MultiZ:
    """K prior samples per input for one Translator (see the module docstring)."""

    def __init__(self, model, num_z, n_best, unk_id, itos, max_utterance, rerank=False,
                 lam=1.0, gamma=0.0, scores_path=None):
        self.model, self.num_z, self.n_best = model, num_z, n_best
        self.unk_id, self.itos, self.max_utterance = unk_id, itos, max_utterance
        self.rerank, self.lam, self.gamma = rerank, lam, gamma
        self.has_dec3 = "x_cyz" in model.cfg.decoders
        self.writer = ScoreWriter(scores_path) if scores_path else None
        # what onmt_translate writes (and the server returns) per input
        self.lines_per_input = n_best if rerank else num_z * n_best

    @classmethod
    def from_opt(cls, model, vocabs, opt, model_opt, n_best):
        """None with -mirror_num_z 1 and no re-ranking option (the stock decoding runs).
        n_best: what each beam keeps (-n_best)."""
        from onmt_mirror.models.mirror import MirrorModel

        num_z = opt.mirror_num_z
        if num_z == 1 and not opt.mirror_rerank and not opt.mirror_rerank_scores:
            return None
        if not isinstance(model, MirrorModel):
            raise MirrorError("-mirror_num_z, -mirror_rerank and -mirror_rerank_scores "
                              "apply to Mirror models only (this one: %s)"
                              % type(model).__name__)
        if num_z > 1:
            if opt.mirror_z == "mean":
                raise MirrorError("-mirror_num_z %d draws %d samples of z from the prior; "
                                  "with -mirror_z mean all would be the mean: drop "
                                  "-mirror_z" % (num_z, num_z))
            model.z_mode = "sample"
        elif opt.mirror_rerank and n_best == 1:
            raise MirrorError("-mirror_rerank with -mirror_num_z 1 and -n_best 1 has one "
                              "candidate per input to choose from: give -mirror_num_z K "
                              "(K samples of z, re-ranked), or -n_best N to reorder one "
                              "beam's N best")
        if opt.mirror_rerank_scores and opt.world_size > 1:
            raise MirrorError("-mirror_rerank_scores: write the score file from one process "
                              "(-world_size 1)")
        if (opt.mirror_rerank and opt.mirror_rerank_lambda != 0
                and "x_cyz" not in model.cfg.decoders):
            raise MirrorError("-mirror_rerank: this model has no Dec3 (dec_x_cyz; e.g. the "
                              "CVAE) for lambda's log p(x|c,z,y): use "
                              "-mirror_rerank_lambda 0 (forward score and length only)")
        tgt = vocabs["tgt"]
        return cls(model, num_z, n_best, tgt.lookup_token(DefaultTokens.UNK),
                   tgt.ids_to_tokens, model_opt.mirror_max_utterance_tokens,
                   opt.mirror_rerank, opt.mirror_rerank_lambda, opt.mirror_rerank_gamma,
                   opt.mirror_rerank_scores)

    def tile(self, batch):
        """The batch with each input's K copies side by side (rows b*K .. b*K+K-1)."""
        B, K = len(batch["srclen"]), self.num_z

        def copies(v):
            if torch.is_tensor(v) and v.dim() and v.size(0) == B:
                return v.repeat_interleave(K, 0)
            if isinstance(v, list) and len(v) == B:
                return [e for e in v for _ in range(K)]
            return v

        return {k: copies(v) for k, v in batch.items()}

    @torch.no_grad()
    def join(self, batch, tiled, results):
        """translate_batch's results on the tiled batch -> results on `batch`: each input's
        K x n_best candidates, or its n_best best by the re-rank score (then its score)."""
        K, per = self.num_z, self.num_z * self.n_best

        def flat(field):  # one entry per candidate, input b's at b*per + rank
            return [c for row in results[field] for c in row]

        preds, beam_scores = flat("predictions"), flat("scores")
        attention, alignment = flat("attention"), flat("alignment")
        eos = self.model.cfg.eos_id
        ys = [t[:-1] if t and t[-1] == eos else t for t in (p.tolist() for p in preds)]
        scored = self.rerank or self.writer is not None
        fwd, bwd = self.teacher_forced(tiled, ys) if scored else (None, None)
        gold_lp = results.get("gold_log_probs")
        out = dict(results, batch=batch, predictions=[], scores=[], attention=[],
                   alignment=[], gold_score=results["gold_score"][::K],
                   gold_log_probs=None if gold_lp is None else gold_lp[::K])
        rows = []
        for b in range(len(batch["srclen"])):
            first = b * per
            cands = [{"rank": r, "length": len(ys[first + r]),
                      "fwd": fwd[first + r] if scored else None,
                      "bwd": bwd[first + r] if scored else None} for r in range(per)]
            if self.rerank:
                score = [mmi_score(c, self.lam, self.gamma) for c in cands]
                order = sorted(range(per), key=lambda r: -score[r])[: self.n_best]
                out["scores"].append([score[r] for r in order])
            else:
                order = range(per)
                out["scores"].append(beam_scores[first:first + per])
            out["predictions"].append([preds[first + r] for r in order])
            out["attention"].append([attention[first + r] for r in order])
            out["alignment"].append([alignment[first + r] for r in order] if alignment
                                    else [])
            if self.writer:
                rows += [dict(c, src_id=batch["cid_line_number"][b],
                              candidate=" ".join(self.itos[t] for t in ys[first + r]))
                         for r, c in enumerate(cands)]
        if self.writer:
            self.writer.write(rows)
        return out

    def teacher_forced(self, tiled, ys):
        """log p(y|c,x,z) and log p(x|c,z,y) (0 without Dec3) of each candidate y (token
        ids, no </s>), with the z of its row of the tiled batch."""
        m, n_best = self.model, self.n_best
        src, src_len, z = tiled["src"][:, :, 0], tiled["srclen"], m.decoder.z
        fwd, bwd = [], []
        for start in range(0, len(ys), SCORE_CHUNK):
            chunk = ys[start:start + SCORE_CHUNK]
            rows = torch.arange(start, start + len(chunk), device=src.device) // n_best
            given = (src[rows], src_len[rows])
            fwd += mirror_log_prob(m, "y_cxz", *given, *self.pad(chunk, src.device),
                                   z[rows]).tolist()
            if self.has_dec3:
                read = [as_read_by_dec3(y, self.max_utterance, self.unk_id) for y in chunk]
                bwd += mirror_log_prob(m, "x_cyz", *given, *self.pad(read, src.device),
                                       z[rows]).tolist()
            else:
                bwd += [0.0] * len(chunk)
        return fwd, bwd

    def pad(self, seqs, device):
        """Token id lists -> (B, L) padded, (B,) lengths."""
        tensors = [torch.tensor(s, dtype=torch.long) for s in seqs]
        padded = pad_sequence(tensors, batch_first=True,
                              padding_value=self.model.cfg.pad_id)
        return padded.to(device), torch.tensor([len(s) for s in seqs], device=device)
