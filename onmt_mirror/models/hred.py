"""HRED (Serban et al., 2016): an utterance encoder, a context RNN over utterance vectors.

The src field of the mirror_triple transform is
`c_1 ｟mirror_turn｠ ... c_K ｟mirror_query｠ x`. The hierarchical encoder splits it at the
separator tokens, reads every turn with one utterance-level RNN and runs a context-level
RNN over the turn vectors (in dialogue order):

    u_i = UtteranceRNN(turn_i)          h_ctx = ContextRNN(u_1, ..., u_K, u_x)

HREDEncoder and HREDDecoder are an OpenNMT-py encoder and decoder (`encoder_type: hred`,
`decoder_type: hred`) that the stock builder joins into a stock seq2seq model. As in
Serban et al., the decoder LSTM starts from the context state through a tanh bridge AND
reads the context state in every step, concatenated to the word embedding:

    (h_0, c_0) = tanh(W h_ctx)          h_t = LSTM([e(y_{t-1}); h_ctx], h_{t-1})

The initial state alone is not enough: trained that way, the context vector grew into a
constant that saturated the bridge's tanh, and the decoder answered every dialogue with
one reply (docs/results.md, "HRED answers one reply"). With `global_attention: none`
(Serban et al.) this is all the decoder sees of the dialogue; with an attention type it
also attends over the utterance encoder's outputs of every word.

HierarchicalContextEncoder is also MirrorModel's context encoder for VHRED
(`-mirror_context_encoder hierarchical`, Serban et al. 2017): there it reads the turns
of c, then x, and its context state conditions z and every decoder step
(onmt_mirror/models/mirror.py).
"""
import torch
import torch.nn as nn
from onmt.decoders.decoder import StdRNNDecoder
from onmt.encoders.encoder import EncoderBase

from onmt_mirror.errors import MirrorError
from onmt_mirror.modules.padding import lengths_to_mask
from onmt_mirror.modules.rnn_encoder import RNNEncoder

HRED_ENCODER = HRED_DECODER = "hred"  # encoder_type and decoder_type


def turn_layout(tokens, lengths, separator_ids, pad_id=None):
    """Where each word of a separator-joined turn sequence goes.

    tokens: (B, L) ids, lengths: (B,) -> dict of (B, L) tensors `is_word`, `is_sep`,
    `turn` (turn index of each position) and `pos` (position inside its turn), plus
    `n_turns` (B,) and `turn_len` (B, T) word counts. A turn may be empty (a context cut
    from the left may start with a separator); it keeps its slot. pad_id tokens inside
    the lengths are no words (VHRED joins padded c and x side by side).
    """
    valid = lengths_to_mask(lengths, tokens.size(1))
    seps = torch.tensor(list(separator_ids), device=tokens.device, dtype=tokens.dtype)
    is_sep = torch.isin(tokens, seps) & valid
    is_word = valid & ~is_sep
    if pad_id is not None:
        is_word &= tokens.ne(pad_id)
    turn = is_sep.long().cumsum(1)
    words = is_word.long().cumsum(1)
    # words before the turn started = the running count at the separator opening it
    start = torch.where(is_sep, words, torch.zeros_like(words)).cummax(1).values
    n_turns = is_sep.long().sum(1) + 1
    T = int(n_turns.max())
    turn_len = torch.zeros(tokens.size(0), T, dtype=torch.long, device=tokens.device)
    turn_len.scatter_add_(1, turn.clamp(max=T - 1), is_word.long())
    return {"is_word": is_word, "is_sep": is_sep, "turn": turn, "pos": words - start - 1,
            "n_turns": n_turns, "turn_len": turn_len}


class HierarchicalContextEncoder(nn.Module):
    """Utterance RNN over each turn, context RNN over the turn vectors.

    forward(emb (B, L, E), lengths (B,), tokens (B, L)) -> memory (B, L, H), vec (B, H):
    the same shapes as RNNEncoder, so it can stand in for Mirror's flat context encoder.
    memory holds, at each word, the utterance RNN's output there and, at each separator,
    the context RNN's state after the turn it closes; vec is the final context state
    (the final (h, c) of every layer through Linear+ReLU, as RNNEncoder's).
    """

    def __init__(self, emb_size, hidden, layers, dropout, bidirectional, separator_ids=(),
                 pad_id=None):
        super().__init__()
        self.utterance_rnn = RNNEncoder(emb_size, hidden, layers, dropout, bidirectional)
        self.context_rnn = RNNEncoder(hidden, hidden, layers, dropout, False)
        self.separator_ids = tuple(separator_ids)  # vocabulary ids, not saved weights
        self.pad_id = pad_id

    def forward(self, emb, lengths, tokens):
        if not self.separator_ids:
            raise MirrorError("HierarchicalContextEncoder: separator ids are not set")
        B, L, E = emb.shape
        lay = turn_layout(tokens, lengths, self.separator_ids, self.pad_id)
        T = lay["turn_len"].size(1)
        U = max(int(lay["turn_len"].max()), 1)
        b, w = lay["is_word"].nonzero(as_tuple=True)  # batch row, position of each word
        t, p = lay["turn"][b, w], lay["pos"][b, w]
        # (B*T, U, E): one row per turn slot; only the slots of real turns are read
        utt = emb.new_zeros(B * T, U, E)
        utt[b * T + t, p] = emb[b, w]
        real = (torch.arange(T, device=emb.device)[None, :] < lay["n_turns"][:, None])
        rows = real.view(-1).nonzero(as_tuple=True)[0]
        lens = lay["turn_len"].view(-1)[rows].clamp(min=1)  # an empty turn reads one pad
        out, vec = self.utterance_rnn(utt[rows], lens)
        H = vec.size(-1)
        turn_vecs = vec.new_zeros(B * T, H).index_copy(0, rows, vec).view(B, T, H)
        ctx_out, ctx_vec = self.context_rnn(turn_vecs, lay["n_turns"])  # (B, T, H), (B, H)
        words_out = out.new_zeros(B * T, U, H).index_copy(0, rows, out)
        memory = out.new_zeros(B, L, H)  # the LSTMs' dtype (fp16 under autocast)
        memory[b, w] = words_out[b * T + t, p]
        sb, sl = lay["is_sep"].nonzero(as_tuple=True)
        memory[sb, sl] = ctx_out[sb, lay["turn"][sb, sl] - 1].to(memory.dtype)
        return memory, ctx_vec


class HREDEncoder(EncoderBase):
    """`encoder_type: hred`: embeddings -> HierarchicalContextEncoder -> decoder state.

    Returns (memory bank (B, L, H), (h0, c0, h_ctx), src_len): h0, c0 (dec_layers, B, H)
    from the context state h_ctx (B, H), which HREDDecoder also reads at every step. The
    separators (｟mirror_turn｠, ｟mirror_query｠) are vocabulary ids, set by the plugin's
    model builder after construction.
    """

    def __init__(self, embeddings, hidden, layers, dec_layers, dropout):
        super().__init__()
        self.embeddings = embeddings
        self.context = HierarchicalContextEncoder(embeddings.embedding_size, hidden,
                                                  layers, dropout, bidirectional=False)
        self.dec_layers, self.hidden = dec_layers, hidden
        self.bridge = nn.Linear(hidden, 2 * dec_layers * hidden)  # context -> (h0, c0)

    @classmethod
    def from_opt(cls, opt, embeddings):
        if opt.rnn_type != "LSTM":
            raise MirrorError("encoder_type hred supports -rnn_type LSTM only")
        if opt.decoder_type != HRED_DECODER:
            # checkpoints of the first HRED (stock decoder, context in its initial state
            # only) are refused here: their context channel had collapsed
            raise MirrorError(
                "encoder_type hred needs -decoder_type hred (the context state in every "
                "decoder step), not %r: an HRED checkpoint with the stock decoder predates "
                "it and answers one reply to every dialogue; retrain it with the hred.yaml "
                "recipe" % opt.decoder_type)
        dropout = opt.dropout[0] if isinstance(opt.dropout, list) else opt.dropout
        return cls(embeddings, opt.enc_hid_size, opt.enc_layers, opt.dec_layers, dropout)

    def set_separators(self, separator_ids):
        self.context.separator_ids = tuple(separator_ids)

    def forward(self, src, src_len=None):
        # src: (B, L, 1) -> memory (B, L, H), (h0, c0 (dec_layers, B, H), h_ctx (B, H))
        if src_len is None:
            src_len = src.new_full((src.size(0),), src.size(1))
        memory, ctx = self.context(self.embeddings(src), src_len, src[:, :, 0])
        hc = torch.tanh(self.bridge(ctx)).view(-1, 2, self.dec_layers, self.hidden)
        h0 = hc[:, 0].transpose(0, 1).contiguous()
        c0 = hc[:, 1].transpose(0, 1).contiguous()
        return memory, (h0, c0, ctx), src_len

    def update_dropout(self, dropout, attention_dropout=None):
        self.embeddings.update_dropout(dropout)
        for module in self.modules():
            if isinstance(module, nn.LSTM) and module.num_layers > 1:
                module.dropout = dropout


class HREDDecoder(StdRNNDecoder):
    """`decoder_type: hred`: the stock LSTM decoder (one cuDNN call over the target) with
    the context state h_ctx (B, H) concatenated to every input embedding, as Serban et
    al.'s HRED. h_ctx rides in the decoder state, so beam search tiles and reorders it."""

    def __init__(self, *args, context_size, **kwargs):
        self.context_size = context_size  # read by _input_size while the LSTM is built
        super().__init__(*args, **kwargs)

    @classmethod
    def from_opt(cls, opt, embeddings):
        if opt.encoder_type != HRED_ENCODER or opt.context_gate or opt.copy_attn \
                or opt.coverage_attn:
            raise MirrorError("decoder_type hred reads encoder_type hred's context state "
                              "and takes no -context_gate, -copy_attn or -coverage_attn")
        dropout = opt.dropout[0] if isinstance(opt.dropout, list) else opt.dropout
        return cls(opt.rnn_type, False, opt.dec_layers, opt.dec_hid_size,
                   opt.global_attention, opt.global_attention_function, dropout=dropout,
                   embeddings=embeddings, context_size=opt.enc_hid_size)

    @property
    def _input_size(self):
        return self.embeddings.embedding_size + self.context_size

    def init_state(self, src, enc_out, enc_final_hs):
        h0, c0, ctx = enc_final_hs
        super().init_state(src, enc_out, (h0, c0))
        self.state["context"] = ctx

    def map_state(self, fn):
        super().map_state(fn)
        # cuDNN refuses the strided (h, c) that the stock reordering leaves
        self.state["hidden"] = tuple(h.contiguous() for h in self.state["hidden"])
        self.state["context"] = fn(self.state["context"], 0)

    def detach_state(self):
        super().detach_state()
        self.state["context"] = self.state["context"].detach()

    def _run_forward_pass(self, tgt, enc_out, src_len=None):
        # tgt (B, T, 1) -> final (h, c), outputs (B, T, H), {"std": attention} if any
        emb = self.embeddings(tgt)
        ctx = self.state["context"][:, None, :].expand(-1, emb.size(1), -1)
        out, state = self.rnn(torch.cat([emb, ctx.to(emb.dtype)], -1), self.state["hidden"])
        attns = {}
        if self.attentional:
            out, attns["std"] = self.attn(out, enc_out, src_len=src_len)
        return state, self.dropout(out), attns
