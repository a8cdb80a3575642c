"""Sequence log-probabilities from OpenNMT-py checkpoints, batched, on GPU when available.

Three scorers, all teacher-forced sums of log-probabilities (</s> included, as beam search
counts it):

- `forward`  log p(y | c, x): any model trained on the mirror_triple transform (stock
  seq2seq, HRED, Mirror/CVAE/VHRED through Dec1 with z = the prior mean), driven through
  the same model.encoder / model.decoder / model.generator calls as onmt_translate.
- `mmi`      log p(x | y): a backward model trained on the mirror_backward transform.
- `dec3`     log p(x | c, z, y): Mirror's Dec3 with z = the prior mean (no system of the
  paper re-ranks with it).

Checkpoints load through onmt.model_builder.load_test_model, i.e. the plugin's builder.
`mirror_log_prob` is the tensor-level Mirror scorer with a given z; decoding with K
samples of z (onmt_mirror/translate/multi_z.py) re-ranks each candidate with its own.
"""
import torch
import torch.nn.functional as F

from onmt_mirror.dialogue import split_turns
from onmt_mirror.errors import MirrorError

PAD, BOS, EOS, UNK = "<blank>", "<s>", "</s>", "<unk>"


def translate_opt(model_path, gpu):
    """The option namespace onmt_translate would build for `-model PATH [-gpu G]`."""
    from onmt.opts import translate_opts
    from onmt.utils.parse import ArgumentParser

    parser = ArgumentParser()
    translate_opts(parser)
    opt = parser.parse_args(["-model", model_path, "-src", "-", "-gpu", str(gpu)])
    # the plugin's load_test_model adds mirror_triple (and checks -src) unless listed
    opt.transforms = ["mirror_triple"]
    return opt


def default_gpu():
    return 0 if torch.cuda.is_available() else -1


def as_read_by_dec3(y, max_tokens, unk):
    """A reply as Dec3 conditions on it: truncated as training truncates y, and an empty
    reply read as <unk> (the utterance encoder needs one token)."""
    return y[:max_tokens] if len(y) else [unk]


def gold_sum(logp, gold, pad_id):
    """logp (B, T, V), gold (B, T) -> (B,) summed log-probabilities of the gold tokens."""
    tok = logp.gather(2, gold[..., None])[..., 0]
    return tok.masked_fill(gold.eq(pad_id), 0.0).sum(1)


def mirror_log_prob(model, name, src, src_len, y, y_len, z=None):
    """Teacher-forced log-probability (summed, </s> included) of what Mirror's decoder
    `name` predicts: "y_cxz" log p(y|c,x,z) (Dec1), "x_cyz" log p(x|c,z,y) (Dec3).

    src (B, L) = c ｟mirror_query｠ x; y (B, Ly) without <s> or </s>, padded (y_len >= 1
    where the decoder reads y); z (B, Z), or None for the prior mean."""
    spec = model.DECODERS[name]
    reads_y = "y" in spec.init_from + spec.memory_from
    enc = model.encode_dialogue(src, src_len, *((y, y_len) if reads_y else ()))
    z = model.prior(enc)[0] if z is None else z
    vecs, memories = model.decoder_inputs(enc)
    dec_in, gold = model.with_bos_eos(*((y, y_len) if spec.target == "y"
                                        else (enc["x"].tokens, enc["x"].lengths)))
    out, _ = model.run_decoder(name, dec_in, z, vecs, memories)
    logp = F.log_softmax(model.readout(name)(out).float(), -1)
    return gold_sum(logp, gold, model.cfg.pad_id)


class CheckpointScorer:
    """One model; `score(pairs)` -> log-probabilities, in the order of the pairs.

    kind: "forward", "mmi", "dec3", or None (a backward scorer: dec3 for a Mirror model,
    else mmi). `CheckpointScorer.load(path, ...)` reads a checkpoint."""

    def __init__(self, model, vocabs, model_opt, kind=None, batch_size=64, name="model"):
        from onmt_mirror.models.mirror import MirrorModel
        from onmt_mirror.transforms.mirror_triple import MirrorTripleTransform

        self.model, self.vocabs, self.model_opt = model.eval(), vocabs, model_opt
        self.path, self.batch_size = name, batch_size
        self.device = next(model.parameters()).device
        transforms = set(getattr(model_opt, "_all_transform", None) or ())
        is_mirror = isinstance(model, MirrorModel)
        if kind is None:
            kind = "dec3" if is_mirror else "mmi"
        if kind == "dec3" and not (is_mirror and "x_cyz" in model.cfg.decoders):
            raise MirrorError("%s: the dec3 scorer needs a Mirror checkpoint trained with "
                              "the x_cyz decoder (Dec3)" % name)
        need = "mirror_backward" if kind == "mmi" else "mirror_triple"
        if need not in transforms:
            raise MirrorError("%s: a %s scorer needs a checkpoint trained with the %s "
                              "transform (this one: %s)" % (name, kind, need,
                                                           sorted(transforms) or "none"))
        self.kind = kind
        self.triple = MirrorTripleTransform(model_opt)  # history -> c ｟q｠ x
        self.sep = model_opt.mirror_turn_sep
        self.max_u = model_opt.mirror_max_utterance_tokens

    @classmethod
    def load(cls, model_path, kind=None, gpu=None, batch_size=64):
        from onmt.model_builder import load_test_model

        gpu = default_gpu() if gpu is None else gpu
        vocabs, model, model_opt = load_test_model(translate_opt(model_path, gpu))
        return cls(model, vocabs, model_opt, kind, batch_size, model_path)

    # -- text -> token lists ---------------------------------------------------------
    def _src_tokens(self, history):
        ex = self.triple.apply({"src": history.split(), "tgt": None})
        if ex is None:
            raise MirrorError("%s: a source line without a query turn: %r"
                              % (self.path, history[:80]))
        return ex["src"]

    def _query(self, history):
        return split_turns(history.split(), self.sep)[-1][: self.max_u]

    def pairs_to_tokens(self, history, candidate):
        """-> (input tokens, predicted tokens) of this scorer for one (source, y)."""
        y = as_read_by_dec3(candidate.split(), self.max_u, UNK)
        if self.kind == "forward":
            return self._src_tokens(history), candidate.split()
        if self.kind == "mmi":
            return y, self._query(history)
        return self._src_tokens(history), y  # dec3: src = c ｟q｠ x, plus y

    # -- batching ----------------------------------------------------------------------
    def _pad(self, seqs, vocab):
        ids = [torch.tensor(vocab(s), dtype=torch.long) for s in seqs]
        lengths = torch.tensor([len(s) for s in ids])
        padded = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True,
                                                 padding_value=vocab[PAD])
        return padded.to(self.device), lengths.to(self.device)

    @torch.no_grad()
    def score(self, pairs):
        """pairs: list of (history line, candidate y) -> list of float log-probs."""
        toks = [self.pairs_to_tokens(h, y) for h, y in pairs]
        order = sorted(range(len(toks)), key=lambda i: (len(toks[i][0]), len(toks[i][1])))
        out = [0.0] * len(toks)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            scores = self._score_batch([toks[i][0] for i in idx], [toks[i][1] for i in idx])
            for i, s in zip(idx, scores.tolist()):
                out[i] = s
        return out

    def _score_batch(self, srcs, tgts):
        if self.kind == "dec3":
            return self._score_dec3(srcs, tgts)
        src, src_len = self._pad(srcs, self.vocabs["src"])
        tgt, _ = self._pad([[BOS] + t + [EOS] for t in tgts], self.vocabs["tgt"])
        src, tgt = src[:, :, None], tgt[:, :, None]
        m = self.model
        enc_out, enc_final_hs, enc_len = m.encoder(src, src_len)
        enc_len = src_len if enc_len is None else enc_len
        m.decoder.init_state(src, enc_out, enc_final_hs)
        dec_out, _ = m.decoder(tgt[:, :-1], enc_out, src_len=enc_len)
        logp = F.log_softmax(m.generator(dec_out).float(), -1)
        return gold_sum(logp, tgt[:, 1:, 0], self.vocabs["tgt"][PAD])

    def _score_dec3(self, srcs, ys):
        """log p(x | c, z, y), z = the mean of Mirror's prior (what decoding uses)."""
        src, src_len = self._pad(srcs, self.vocabs["src"])
        y, y_len = self._pad(ys, self.vocabs["src"])
        return mirror_log_prob(self.model, "x_cyz", src, src_len, y, y_len)
