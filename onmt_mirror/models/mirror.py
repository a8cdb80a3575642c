"""Mirror: a bidirectional conditional VAE for dialogue response generation.

A dialogue triple is context c (turn t-2), query x (turn t-1) and response y (turn t).
The training objective (the paper's Eq. 6) is

    E_q(z|c,x,y)[ 1/2 log p(y|c,z,x) + 1/2 log p(x|c,z) + 1/2 log p(x|c,z,y)
                  + 1/2 log p(y|c,z) ]  -  KL(q(z|c,x,y) || p(z|c))

read here from parts to the whole: encoders -> Gaussian nets -> attention decoder ->
the bag-of-words head and KL annealing -> MirrorModel. With only the y_cxz decoder and
the prior on (c, x) the same model is the CVAE of the paper's Eq. 1, and with the
hierarchical context encoder VHRED (Serban et al. 2017; MirrorModel.vhred). The last class
adapts the model to the encoder/decoder interface that OpenNMT-py's beam search drives;
only Dec1 p(y|c,z,x) runs at decoding time. The tensor plumbing underneath (packing, the
LSTM, the Gaussian algebra) is in onmt_mirror/modules/.
"""
import math
from functools import partial
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from onmt.models.model import BaseModel

from onmt_mirror.errors import MirrorError
from onmt_mirror.losses.fused_cross_entropy import cross_entropy_sum
from onmt_mirror.models.hred import HierarchicalContextEncoder
from onmt_mirror.modules.gaussian import (free_bits_kl, gaussian_kl_dims,
                                          gaussian_log_density, mutual_information,
                                          reparameterize)
from onmt_mirror.modules.lstm import LSTM
from onmt_mirror.modules.padding import PackPlan, lengths_to_mask, select_rows
from onmt_mirror.modules.rnn_encoder import RNNEncoder
from onmt_mirror.modules.src_field import DialogueBatch, split_src
from onmt_mirror.modules.streams import in_parallel
from onmt_mirror.opts import DECODERS


class EncoderResult(NamedTuple):
    """What the encoders make of one utterance (c, x or y) of a batch. The context encoder
    is an RNNEncoder over c's tokens, or VHRED's HierarchicalContextEncoder over its
    turns; x and y share one RNNEncoder."""

    tokens: torch.Tensor  # (B, L) ids, no <s> or </s>, padded
    lengths: torch.Tensor  # (B,) on the device
    memory: torch.Tensor  # (B, L, H) encoder outputs, what the decoders attend over
    vector: torch.Tensor  # (B, H) sentence vector, what the Gaussian nets and bridges read

    def mask(self):
        """(B, L) True on real tokens, for attention over `memory`."""
        return lengths_to_mask(self.lengths, self.memory.size(1))


class GaussianNet(nn.Module):
    """inputs -> Linear+ReLU -> (mean, log-variance): the prior p(z|c) and the
    posterior q(z|c,x,y) have this shape (reference code).

    The log-variance is softly bounded to (-LOGVAR_BOUND, LOGVAR_BOUND) by a scaled tanh
    (identity near 0). While the KL weight is still ~0, nothing holds the posterior's
    variance and it was seen to grow past e^17 within 30 steps; exp() of that overflows
    fp16 in mixed precision and turns every decoder's loss into NaN. A standard deviation
    of e^5 already drowns any mean, so the bound changes no reachable solution."""

    LOGVAR_BOUND = 10.0

    def __init__(self, in_size, hidden, z_size):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(in_size, hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, z_size)
        self.logvar = nn.Linear(hidden, z_size)

    def forward(self, inputs):
        h = self.hidden(inputs)
        bound = self.LOGVAR_BOUND
        return self.mean(h), bound * torch.tanh(self.logvar(h) / bound)


class AttnDecoder(nn.Module):
    """An LSTM decoder with z concatenated to every input step and Luong attention.

    input_feed=True is the reference: the previous attentional output is fed back, so the
    steps run one by one. input_feed=False runs all steps in one (cuDNN) LSTM call and
    attends afterwards, which is what makes training fast on a GPU.
    """

    def __init__(self, emb_size, z_size, hidden, layers, dropout, input_feed,
                 attn_type, init_size):
        super().__init__()
        if attn_type not in ("general", "dot"):
            raise MirrorError("Mirror supports -global_attention general or dot, not %r"
                              % attn_type)
        self.layers, self.hidden, self.input_feed = layers, hidden, input_feed
        in_size = emb_size + z_size + (hidden if input_feed else 0)
        self.lstm = LSTM(in_size, hidden, layers, batch_first=True,
                         dropout=dropout if layers > 1 else 0.0)
        self.bridge = nn.Linear(init_size, 2 * layers * hidden)  # sentence vec -> (h0, c0)
        self.attn_in = nn.Linear(hidden, hidden, bias=False) if attn_type == "general" \
            else None
        self.attn_out = nn.Linear(2 * hidden, hidden, bias=False)
        self.dropout = nn.Dropout(dropout)

    def init_state(self, vec):
        """(B, init_size) -> ((layers, B, H), (layers, B, H)); z is NOT put in the state
        (reference: z enters through the inputs only)."""
        hc = torch.tanh(self.bridge(vec)).view(vec.size(0), 2, self.layers, self.hidden)
        return (hc[:, 0].transpose(0, 1).contiguous(),
                hc[:, 1].transpose(0, 1).contiguous())

    def one_step(self, inp, state):
        """One step of self.lstm (inference, no dropout) as fused LSTM cells over the same
        weights: beam search advances one token at a time, and cuDNN's fixed cost per
        call then outweighed the step itself (decoding ran at 0.7x the stock decoder)."""
        x, (h0, c0) = inp[:, 0], state
        hs, cs = [], []
        for k in range(self.layers):
            h, c = torch.lstm_cell(
                x, (h0[k], c0[k]), getattr(self.lstm, "weight_ih_l%d" % k),
                getattr(self.lstm, "weight_hh_l%d" % k), getattr(self.lstm, "bias_ih_l%d" % k),
                getattr(self.lstm, "bias_hh_l%d" % k))
            hs.append(h)
            cs.append(c)
            x = h
        return x[:, None], (torch.stack(hs), torch.stack(cs))

    def attend(self, h, memory, mask, index=None):
        """h: (B, T, H), memory: (B, S, H), mask: (B, S) -> out, attn (B, T, S).

        out is (B, T, H), or (N, H) at the flat (b * T + t) positions in `index` (the real
        tokens) so that the output projection skips padding."""
        q = self.attn_in(h) if self.attn_in is not None else h
        scores = torch.bmm(q, memory.transpose(1, 2))
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        attn = torch.softmax(scores, -1)
        both = torch.cat([torch.bmm(attn.to(memory.dtype), memory), h], -1)
        if index is not None:
            both = select_rows(both, index)
        return torch.tanh(self.attn_out(both)), attn

    def forward(self, emb, z, state, memory, mask, feed=None, index=None):
        """emb: (B, T, E), z: (B, Z), state: (h, c) -> out, attn (B, T, S), state, feed.

        With the flat positions of the gold tokens (teacher forcing), out is (N, H) at
        those positions, so the output projections skip padding; beam search passes none
        and gets (B, T, H). The LSTM itself runs on the padded batch:
        its outputs at real positions do not depend on what follows them, and on an H200
        cuDNN's packed mode was slower here (a device copy per step and sequence end)."""
        T = emb.size(1)
        zs = z[:, None, :].expand(-1, T, -1).to(emb.dtype)
        if not self.input_feed:
            run = self.one_step if T == 1 and not self.training else self.lstm
            h, state = run(torch.cat([emb, zs], -1), state)
            out, attn = self.attend(h, memory, mask, index)
            return self.dropout(out), attn, state, None
        if feed is None:
            feed = emb.new_zeros(emb.size(0), self.hidden)
        outs, attns = [], []
        for t in range(T):
            inp = torch.cat([emb[:, t], zs[:, t], feed.to(emb.dtype)], -1)[:, None, :]
            h, state = self.lstm(inp, state)
            out, attn = self.attend(h, memory, mask)
            feed = self.dropout(out[:, 0])
            outs.append(feed)
            attns.append(attn)
        out = torch.stack(outs, 1)
        return (out if index is None else select_rows(out, index)), torch.cat(attns, 1), \
            state, feed


class BagOfWords(nn.Module):
    """The bag-of-words loss (Zhao et al. 2017): an MLP from [z; the prior's input]
    predicts every word of an utterance, order ignored. The decoders can model y
    without z; this head cannot, so z has to carry the utterance's words."""

    HIDDEN = 400  # NeuralDialog-CVAE's size

    def __init__(self, in_size, vocab_size):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_size, self.HIDDEN), nn.Tanh(),
                                 nn.Linear(self.HIDDEN, vocab_size))

    def forward(self, inputs, tokens, pad_id):
        """inputs (B, D), tokens (B, L) without specials -> the summed NLL (fp32)."""
        logp = F.log_softmax(self.mlp(inputs).float(), -1)
        tok = logp.gather(1, tokens)
        return -tok.masked_fill(tokens.eq(pad_id), 0.0).sum()


class KLAnnealing(nn.Module):
    """KL weight rising linearly from 0 to `weight` over `steps` training batches;
    cyclical (Fu et al. 2019) with cycles > 1: the `steps`-long cycle repeats, rising
    over its first `ratio` and holding `weight` for the rest, then stays at `weight`.

    The batch count is a buffer so that a checkpoint (and -train_from) carries it."""

    def __init__(self, steps, weight, cycles=1, ratio=1.0):
        super().__init__()
        if cycles < 1 or not 0.0 < ratio <= 1.0:
            raise MirrorError("-mirror_kl_anneal_cycles must be >= 1 and "
                              "-mirror_kl_anneal_ratio in (0, 1]")
        self.steps, self.weight, self.cycles, self.ratio = steps, weight, cycles, ratio
        self.register_buffer("step", torch.zeros(1, dtype=torch.long))

    def forward(self):
        if self.steps <= 0:
            return self.weight
        # a device tensor: reading the step on the host would stall the GPU each batch
        step = self.step.float()
        rising = (torch.remainder(step, self.steps) / (self.ratio * self.steps))
        done = step >= self.cycles * self.steps
        return self.weight * torch.where(done, 1.0, rising.clamp(max=1.0))[0]


class MirrorModel(BaseModel):
    """Context encoder, utterance encoder (shared by x and y), prior_net, posterior_net and
    up to four decoders named after what they model: dec_y_cxz p(y|c,z,x) (Dec1), dec_x_cz
    p(x|c,z) (Dec2), dec_x_cyz p(x|c,z,y) (Dec3), dec_y_cz p(y|c,z) (Dec4)."""

    DECODERS = DECODERS  # opts.DECODERS: what each predicts, reads and attends over

    def __init__(self, cfg):
        super().__init__(None, None)
        self.cfg = cfg
        E, H, Z, V = cfg.emb_size, cfg.hidden_size, cfg.z_size, cfg.vocab_size
        self.embedding = nn.Embedding(V, E, padding_idx=cfg.pad_id)  # encoders' table
        self.emb_dropout = nn.Dropout(cfg.dropout)
        if self.vhred:  # an RNN per turn, one over the turns of c and then x
            self.context_encoder = HierarchicalContextEncoder(
                E, H, cfg.enc_layers, cfg.dropout, cfg.bidirectional,
                (cfg.turn_id, cfg.query_id), cfg.pad_id)
        else:
            self.context_encoder = RNNEncoder(E, H, cfg.enc_layers, cfg.dropout,
                                              cfg.bidirectional)
        self.utterance_encoder = RNNEncoder(E, H, cfg.enc_layers, cfg.dropout,
                                            cfg.bidirectional)
        self.prior_net = GaussianNet(H * len(cfg.prior), H, Z)
        self.posterior_net = GaussianNet(H * len(self.posterior_sides), H, Z)
        for name in cfg.decoders:
            init_size = H * len(self.DECODERS[name].init_from)
            setattr(self, "dec_" + name, AttnDecoder(
                E, Z + (H if self.vhred else 0), H, cfg.dec_layers, cfg.dropout,
                cfg.input_feed, cfg.attn_type, init_size))
            if not cfg.share_dec_embeddings:
                setattr(self, "emb_" + name, nn.Embedding(V, E, padding_idx=cfg.pad_id))
            if name != "y_cxz" and not cfg.share_generators:
                # not named "*generator*": OpenNMT-py's saver files those apart
                setattr(self, "readout_" + name, nn.Linear(H, V))
        self.generator = nn.Linear(H, V)  # Dec1's output layer (replaced by OpenNMT-py's)
        prior_in = H * len(cfg.prior)
        for side in self.bow_sides():
            setattr(self, "bow_" + side, BagOfWords(Z + prior_in, V))
        self.kl_annealing = KLAnnealing(cfg.kl_anneal_steps, cfg.kl_weight,
                                        cfg.kl_anneal_cycles, cfg.kl_anneal_ratio)
        self.z_mode = "mean"  # decoding: prior mean or a sample (set by -mirror_z)
        self.fused_ce = True  # the speed benchmark turns it off to measure what it buys
        self._decoding = MirrorDecodingInterface(self)

    # -- helpers -------------------------------------------------------------------
    @property
    def vhred(self):
        """VHRED (Serban et al. 2017) as this model's configuration: c's vector is the
        hierarchical encoder's context state over the turns of c and then x, the
        posterior reads it and y, and every decoder step reads z and the context state."""
        return self.cfg.context_encoder == "hierarchical"

    @property
    def posterior_sides(self):
        return "cy" if self.vhred else "cxy"

    def condition(self, z, vecs):
        """What the decoders read at every step: z, and for VHRED the context state."""
        return torch.cat([z, vecs["c"].to(z.dtype)], -1) if self.vhred else z

    def bow_sides(self):
        """The utterances the bag-of-words loss predicts ("" when it is off)."""
        cfg = self.cfg
        if cfg.bow_weight <= 0:
            return ""
        if cfg.bow_sides == "auto":
            return "".join(s for s in "xy" if any(self.DECODERS[d].target == s
                                                  for d in cfg.decoders))
        return cfg.bow_sides

    def word_dropout(self, dec_in):
        """Bowman et al. 2016: teacher-forced words (not <s>, not padding) become <unk>
        with probability -mirror_word_dropout, in training only."""
        p = self.cfg.word_dropout
        if not self.training or p <= 0:
            return dec_in
        drop = torch.rand(dec_in.shape, device=dec_in.device) < p
        drop[:, 0] = False
        drop &= dec_in.ne(self.cfg.pad_id)
        return dec_in.masked_fill(drop, self.cfg.unk_id)

    def embed(self, tokens, decoder=None):
        table = self.embedding
        if decoder is not None and not self.cfg.share_dec_embeddings:
            table = getattr(self, "emb_" + decoder)
        return self.emb_dropout(table(tokens))

    def readout(self, decoder):
        if decoder == "y_cxz" or self.cfg.share_generators:
            return self.generator
        return getattr(self, "readout_" + decoder)

    def encode_dialogue(self, src, src_len, y=None, y_len=None):
        """The src field split into c and x (split_src), then `encode`."""
        extra = (y_len,) if y is not None else ()
        c, c_len, x, x_len, host = split_src(src, src_len, self.cfg.query_id,
                                             self.cfg.pad_id, extra)
        return self.encode(c, c_len, x, x_len, y, y_len, host)

    def encode(self, c, c_len, x, x_len, y=None, y_len=None, host=None):
        """c through the context encoder; x (and y, when given) through the utterance
        encoder in ONE call, stacked on the batch axis; the two encoders side by side on
        CUDA streams (modules/streams.py), as are the decoders. Returns {"c"|"x"|"y":
        EncoderResult}. host: the lengths of c, x (and y) on the host, with which the
        encoders pack; None keeps every shape the tensors' (a captured step)."""
        pack = host is not None
        utts = [(x, x_len)] + ([(y, y_len)] if y is not None else [])
        width = max(u.size(1) for u, _ in utts)
        stacked = torch.cat([F.pad(u, (0, width - u.size(1)), value=self.cfg.pad_id)
                             for u, _ in utts])
        # both lookups in the shared table on this stream, so that its gradient comes
        # from one stream (autograd warns when a weight's gradients come from several)
        # VHRED's context encoder reads the turns of c, then x: c and x side by side (the
        # hierarchical encoder skips their padding)
        turns = torch.cat([c, c.new_full((c.size(0), 1), self.cfg.query_id), x], 1) \
            if self.vhred else c
        c_emb, u_emb = self.embed(turns), self.embed(stacked)

        def context():
            if self.vhred:
                full = turns.new_full((c.size(0),), turns.size(1))
                memory, vec = self.context_encoder(c_emb, full, turns)
                return memory[:, : c.size(1)], vec
            return self.context_encoder(c_emb, host[0] if pack else c_len, pack)

        def utterances():
            lengths = host[1:].reshape(-1) if pack else torch.cat([n for _, n in utts])
            return self.utterance_encoder(u_emb, lengths, pack)

        (c_out, c_vec), (out, vec) = in_parallel(c.device, context, utterances)
        enc = {"c": EncoderResult(c, c_len, c_out, c_vec)}
        B = c.size(0)
        for i, (key, (u, n)) in enumerate(zip("xy", utts)):
            enc[key] = EncoderResult(u, n, out[i * B:(i + 1) * B, : u.size(1)],
                                     vec[i * B:(i + 1) * B])
        return enc

    def prior_input(self, enc):
        return torch.cat([enc[k].vector for k in self.cfg.prior], -1)

    def prior(self, enc):
        return self.prior_net(self.prior_input(enc))

    def with_bos_eos(self, tokens, lengths):
        """Utterance (B, L) without specials -> decoder input <s> u and gold u </s>."""
        cfg = self.cfg
        bos = tokens.new_full((tokens.size(0), 1), cfg.bos_id)
        pad = tokens.new_full((tokens.size(0), 1), cfg.pad_id)
        dec_in = torch.cat([bos, tokens], 1)
        gold = torch.cat([tokens, pad], 1).scatter(1, lengths[:, None], cfg.eos_id)
        return dec_in, gold

    def nll_rows(self, decoder, out, gold, index):
        """Per-row summed token NLL (B,) in fp32, for the importance-weighted bound."""
        rows = torch.arange(gold.size(0), device=gold.device)[:, None].expand_as(gold)
        logits = self.readout(decoder)(out).float()
        tok = F.cross_entropy(logits, select_rows(gold, index), reduction="none")
        return tok.new_zeros(gold.size(0)).index_add_(0, select_rows(rows, index), tok)

    def nll(self, decoder, out, gold, index, weight=None, with_correct=False):
        """Summed token NLL of a decoder's outputs at the gold positions `index` (N, H),
        against the gold (B, T): padding is often most of a batch, and the (tokens x
        vocabulary) logits are the step's largest tensor. weight: see cross_entropy_sum."""
        gold = select_rows(gold, index)
        nll, argmax = cross_entropy_sum(self.readout(decoder)(out), gold, self.fused_ce,
                                        weight)
        if not with_correct:
            return nll, None
        hit = argmax.eq(gold)
        return nll, (hit.sum() if weight is None else (hit.float() * weight).sum())

    @staticmethod
    def decoder_inputs(enc):
        """What run_decoder reads of encode_dialogue's result: {side: sentence vector} and
        {side: (memory, mask)}, the masks built once for all decoders."""
        sides = [k for k in "cxy" if k in enc]
        return ({k: enc[k].vector for k in sides},
                {k: (enc[k].memory, enc[k].mask()) for k in sides})

    def run_decoder(self, name, dec_in, z, vecs, memories, index=None):
        """Outputs (B, T, H), or (N, H) at the gold positions `index` (teacher forcing)."""
        spec = self.DECODERS[name]
        dec = getattr(self, "dec_" + name)
        state = dec.init_state(torch.cat([vecs[k] for k in spec.init_from], -1))
        memory, mask = memories[spec.memory_from]
        out, attn, _, _ = dec(self.embed(dec_in, name), self.condition(z, vecs), state,
                              memory, mask, index=index)
        return out, attn

    # -- training / validation -----------------------------------------------------
    def forward(self, src, tgt, src_len, bptt=False, with_align=False):
        """src: (B, Ls, 1) = c ｟mirror_query｠ x; tgt: (B, Lt, 1) = <s> y </s>.

        Returns Dec1's outputs on the real target tokens (N, H) and attns with "std"
        (Dec1's attention) and "mirror": the summed terms of Eq. 6 that MirrorLoss
        assembles.
        """
        cfg = self.cfg
        src, tgt = src[:, :, 0], tgt[:, :, 0]
        # y as the utterance encoder reads it: no <s>, no </s>
        y = tgt[:, 1:].masked_fill(tgt[:, 1:].eq(cfg.eos_id), cfg.pad_id)
        y_len = y.ne(cfg.pad_id).sum(1).clamp(min=1)
        c, c_len, x, x_len, host = split_src(src, src_len, cfg.query_id, cfg.pad_id,
                                             (y_len,))
        x_in, x_gold = self.with_bos_eos(x, x_len)
        y_in, y_gold = tgt[:, :-1], tgt[:, 1:]
        # gold tokens per row: the utterance and </s>, in cuDNN's packed order
        n_gold = host[1:] + 1
        index = [PackPlan(n, g.size(1), src.device).index
                 for n, g in zip(n_gold, (x_gold, y_gold))]
        batch = DialogueBatch(c, c_len, x, x_len, y, y_len, x_in, x_gold, y_in, y_gold,
                              *index)
        terms, parts = self.training_terms(batch, host)
        terms.update({"n_sents": float(src.size(0)), "n_x": float(n_gold[0].sum()),
                      "n_y": float(n_gold[1].sum())})
        if not self.training:  # what decoding sees (z from the prior), and how much z carries
            (mu_q, logvar_q), (mu_p, logvar_p) = parts["posterior"], parts["prior"]
            vecs, memories = parts["vecs"], parts["memories"]
            out, _ = self.run_decoder("y_cxz", y_in, mu_p, vecs, memories, batch.index_y)
            terms["nll_y_cxz_prior"], _ = self.nll("y_cxz", out, y_gold, batch.index_y)
            terms.update(self.latent_diagnostics(
                (mu_q.float(), logvar_q.float()), (mu_p.float(), logvar_p.float()),
                (y_in, y_gold, batch.index_y), vecs, memories))
        dec1_out, dec1_attn = parts["dec1"]
        return dec1_out, {"std": dec1_attn, "mirror": terms}

    def training_terms(self, b, host=None):
        """Eq. 6's summed terms of a DialogueBatch, as device tensors, and the parts
        validation reads further. host: the lengths of c, x and y on the host (the eager
        forward, whose encoders pack), or None: then nothing leaves the device and every
        shape is the batch's, so a CUDA graph can replay it (training/captured_step.py)."""
        cfg = self.cfg
        enc = self.encode(b.c, b.c_len, b.x, b.x_len, b.y, b.y_len, host)
        prior_in = self.prior_input(enc)
        mu_p, logvar_p = self.prior_net(prior_in)
        mu_q, logvar_q = self.posterior_net(
            torch.cat([enc[k].vector for k in self.posterior_sides], -1))
        # a sample in training; the posterior mean for (deterministic) validation
        z = reparameterize(mu_q, logvar_q) if self.training else mu_q
        kl_dims = gaussian_kl_dims(mu_q.float(), logvar_q.float(), mu_p.float(),
                                   logvar_p.float())
        vecs, memories = self.decoder_inputs(enc)
        inputs = {"x": (self.word_dropout(b.x_in), b.x_gold, b.index_x),
                  "y": (self.word_dropout(b.y_in), b.y_gold, b.index_y)}
        terms = {"kl": kl_dims.sum(), "kl_weight": self.kl_annealing()}
        if cfg.free_bits > 0:
            terms["kl_loss"] = free_bits_kl(kl_dims, cfg.free_bits, cfg.free_bits_mode)
        z_cond = torch.cat([z.to(prior_in.dtype), prior_in], -1)
        for side in self.bow_sides():
            terms["nll_bow_" + side] = getattr(self, "bow_" + side)(
                z_cond, enc[side].tokens, cfg.pad_id)

        def decode(name):
            side = self.DECODERS[name].target
            dec_in, gold, index = inputs[side]
            out, attn = self.run_decoder(name, dec_in, z, vecs, memories, index)
            nll, correct = self.nll(name, out, gold, index, b.gold_weight(side),
                                    name == "y_cxz")
            return nll, correct, out, attn

        dec1 = (None, None)
        decoded = in_parallel(z.device, *(partial(decode, n) for n in cfg.decoders))
        for name, (nll, correct, out, attn) in zip(cfg.decoders, decoded):
            terms["nll_" + name] = nll
            if name == "y_cxz":
                terms["correct_y_cxz"] = correct
                dec1 = (out, attn)
        if self.training:
            self.kl_annealing.step += 1
        return terms, {"dec1": dec1, "posterior": (mu_q, logvar_q),
                       "prior": (mu_p, logvar_p), "vecs": vecs, "memories": memories}

    def latent_diagnostics(self, posterior, prior, dec1_data, vecs, memories):
        """Validation terms, summed over the batch: the posterior means' sums and squares
        per dimension (active units, Burda et al. 2016), the mutual information between
        z and (c, x, y) under q, and with -mirror_iw_samples k the importance-weighted
        estimate of -log p(y|c,x) (Burda et al.) with k posterior samples. Seeded by a
        generator of their own, so validation stays deterministic and leaves the
        training random streams alone."""
        mu_q, logvar_q = posterior
        gen = torch.Generator(device=mu_q.device).manual_seed(0)
        B = mu_q.size(0)
        terms = {"mu_q_sum": mu_q.sum(0), "mu_q_sumsq": (mu_q ** 2).sum(0),
                 "mi": B * mutual_information(mu_q, logvar_q, gen)}
        k = self.cfg.iw_samples
        if k > 0:
            y_in, y_gold, index = dec1_data
            log_w = []
            for _ in range(k):
                z = reparameterize(mu_q, logvar_q, gen)
                out, _ = self.run_decoder("y_cxz", y_in, z, vecs, memories, index)
                log_w.append(-self.nll_rows("y_cxz", out, y_gold, index)
                             + gaussian_log_density(z, *prior)
                             - gaussian_log_density(z, mu_q, logvar_q))
            log_p = torch.logsumexp(torch.stack(log_w), 0) - math.log(k)
            terms["iw_nll"] = -log_p.sum()
        return terms

    def update_dropout(self, dropout, attention_dropout):
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = dropout
            elif isinstance(module, nn.LSTM) and module.num_layers > 1:
                module.dropout = dropout

    def count_parameters(self, log=print):
        enc = sum(p.nelement() for n, p in self.named_parameters()
                  if n.split(".")[0] in ("embedding", "context_encoder",
                                         "utterance_encoder", "prior_net",
                                         "posterior_net"))
        dec = sum(p.nelement() for p in self.parameters()) - enc
        log("encoder: %d" % enc)
        log("decoder: %d" % dec)
        log("* number of parameters: %d" % (enc + dec))
        return enc, dec

    # -- the interface OpenNMT-py's Translator drives (Dec1 only) --------------------
    @property
    def encoder(self):
        return self._decoding.encode

    @property
    def decoder(self):
        return self._decoding


class MirrorDecodingInterface:
    """What onmt.translate.Translator calls `model.encoder(...)` and `model.decoder`.

    A plain object, not a module: it owns no parameters (registering Dec1 twice would
    duplicate its keys in checkpoints). encode() runs the context and utterance encoders
    and draws z from the prior; the decoder side steps dec_y_cxz with z in its state, so
    beam search tiles and reorders z with the LSTM state. The attention mask over x rides in
    the state too: beam search calls map_state with every reordering of src_len, and a
    mask built once per batch saves kernels on every step. `z` keeps each row's z of the
    last encoded batch, in batch order: decoding with K samples re-ranks every candidate
    with the z it was decoded with (onmt_mirror/translate/multi_z.py).
    """

    attentional = True

    def __init__(self, model):
        self.model = model
        self.state = {}
        self._x_mask = None
        self.z = None

    def encode(self, src, src_len):
        m = self.model
        enc = m.encode_dialogue(src[:, :, 0], src_len)
        mu_p, logvar_p = m.prior(enc)
        z = reparameterize(mu_p, logvar_p) if m.z_mode == "sample" else mu_p
        self.z = z
        spec = m.DECODERS["y_cxz"]  # Dec1: its state from [c; x], attention over x
        h0, c0 = m.dec_y_cxz.init_state(
            torch.cat([enc[k].vector for k in spec.init_from], -1))
        attended = enc[spec.memory_from]
        self._x_mask = attended.mask()
        return attended.memory, (h0, c0, m.condition(z, {"c": enc["c"].vector})), \
            attended.lengths

    def init_state(self, src, enc_out, enc_final_hs):
        h0, c0, z = enc_final_hs
        self.state = {"hidden": (h0, c0), "z": z, "mask": self._x_mask}
        if self.model.dec_y_cxz.input_feed:
            self.state["input_feed"] = h0.new_zeros(h0.size(1), h0.size(2))

    def map_state(self, fn):
        # beam search tiles / reorders along the batch axis (its per-step fn indexes dim
        # 0 whatever dim it is given); cuDNN, stepped with input feeding, wants a
        # contiguous hx, while one_step's fused cells take the strided view as it is
        feed = self.model.dec_y_cxz.input_feed
        hidden = (fn(h.transpose(0, 1), 0).transpose(0, 1) for h in self.state["hidden"])
        self.state["hidden"] = tuple(h.contiguous() if feed else h for h in hidden)
        for key in ("z", "mask", "input_feed"):
            if self.state.get(key) is not None:
                self.state[key] = fn(self.state[key], 0)

    def detach_state(self):
        self.state = {k: (tuple(t.detach() for t in v) if isinstance(v, tuple)
                          else v if v is None else v.detach())
                      for k, v in self.state.items()}

    def update_dropout(self, dropout, attention_dropout):
        self.model.update_dropout(dropout, attention_dropout)

    def __call__(self, tgt, enc_out, src_len=None, step=None, **kwargs):
        # tgt: (B, T, 1), enc_out: x's encoder outputs (B, S, H) -> (B, T, H), attns
        m = self.model
        mask = self.state.get("mask")
        if mask is None or mask.shape != enc_out.shape[:2]:
            mask = lengths_to_mask(src_len, enc_out.size(1))
        out, attn, hidden, feed = m.dec_y_cxz(
            m.embed(tgt[:, :, 0], "y_cxz"), self.state["z"], self.state["hidden"],
            enc_out, mask, self.state.get("input_feed"))
        self.state["hidden"] = hidden
        if feed is not None:
            self.state["input_feed"] = feed
        return out, {"std": attn}
