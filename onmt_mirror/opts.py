"""Mirror's command-line options, and the config dataclass built from them.

OpenNMT-py 3.5.1 has no option hook for plugins except a transform's `add_options`, which
it adds to the onmt_build_vocab, onmt_train and onmt_translate parsers alike; the
`mirror_triple` transform calls `add_mirror_options` from there. Options therefore land in
every checkpoint's `opt`, which is how onmt_translate rebuilds the model.

Sizes reuse the stock options: -enc_layers/-dec_layers, -hidden_size (or -enc_hid_size/
-dec_hid_size), -word_vec_size, -dropout, -global_attention, -input_feed, -param_init.
"""
import argparse
import math
from dataclasses import dataclass
from typing import NamedTuple

from onmt_mirror.dialogue import QUERY_TOKEN, SEPARATOR, TURN_TOKEN

MIRROR_ENCODER = "mirror"
CAPTURED_STEP_AUTO_BATCH = 256  # -mirror_captured_step auto: the largest batch it takes
MAX_NUM_Z = 1000  # -mirror_num_z's cap: 1000 x beam 10 x 20k words is 800 MB an input


class Decoder(NamedTuple):
    target: str  # the utterance it predicts
    init_from: str  # the sentence vectors its initial state reads
    memory_from: str  # the utterance whose encoder outputs it attends over


# The one table of Mirror's decoders, named after what they model; the model, the loss,
# the re-rankers and the options below all read it.
DECODERS = {"y_cxz": Decoder("y", "cx", "x"),  # Dec1 p(y|c,z,x)
            "x_cz": Decoder("x", "c", "c"),  # Dec2 p(x|c,z)
            "x_cyz": Decoder("x", "cy", "y"),  # Dec3 p(x|c,z,y)
            "y_cz": Decoder("y", "c", "c")}  # Dec4 p(y|c,z)


class InRange(argparse.Action):
    """A number option that must lie in `interval` ("[0, inf)", "(0, 1]"; inf excluded, so
    NaN and inf are refused too). Checked as it is parsed (command line or -config), with
    one MirrorError line: argparse's own error would print the whole usage of onmt_train.
    Stock OpenNMT-py took -mirror_kl_anneal_steps -5 or -mirror_free_bits -3 silently."""

    def __init__(self, *args, interval, **kwargs):
        super().__init__(*args, **kwargs)
        low, high = interval[1:-1].split(",")
        self.interval, self.low, self.high = interval, float(low), float(high)
        self.low_open, self.high_open = interval[0] == "(", interval[-1] == ")"

    def __call__(self, parser, namespace, value, option_string=None):
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        if not (above and below and math.isfinite(value)):
            from onmt_mirror.errors import MirrorError

            raise MirrorError("%s %s: give a value in %s" % (
                option_string or "-" + self.dest, value, self.interval))
        setattr(namespace, self.dest, value)


def number(group, name, kind, interval, default, help):
    """Adds -name, a number of `kind` checked against `interval` as it is parsed."""
    group.add("--" + name, "-" + name, type=kind, action=InRange, interval=interval,
              default=default, help=help)


def add_mirror_options(parser):
    group = parser.add_argument_group("Transform/MirrorTriple")
    group.add("--mirror_turn_sep", "-mirror_turn_sep", type=str, default=SEPARATOR,
              help="Token separating turns in a src line (the dialogue history).")
    number(group, "mirror_context_turns", int, "[1, inf)", 1,
           "How many turns before the query form the context c (paper: 1). "
           "Earlier turns are dropped; kept turns are joined with %s." % TURN_TOKEN)
    number(group, "mirror_max_context_tokens", int, "[1, inf)", 100,
           "Truncate c from the left (keep the latest tokens).")
    number(group, "mirror_max_utterance_tokens", int, "[1, inf)", 45,
           "Truncate x and y from the right.")
    group.add("--mirror_bad_line", "-mirror_bad_line", choices=["error", "skip"],
              default="error", help="A line with no query or an empty turn: stop with "
              "an error naming corpus, file and line, or skip it and count it.")

    group = parser.add_argument_group("Model/Mirror")
    number(group, "mirror_z_size", int, "[1, inf)", 160,
           "Size of the latent z (paper: 160 DailyDialog, 100 MovieTriples).")
    group.add("--mirror_decoders", "-mirror_decoders", type=str,
              default=",".join(DECODERS),
              help="Decoders to train: y_cxz (Dec1), x_cz (Dec2), x_cyz (Dec3), y_cz "
              "(Dec4). Only y_cxz gives a CVAE (the paper's Eq. 1).")
    group.add("--mirror_prior", "-mirror_prior", choices=["c", "cx"], default="c",
              help="What the prior conditions on: p(z|c) (Mirror) or p(z|c,x) (CVAE).")
    group.add("--mirror_context_encoder", "-mirror_context_encoder",
              choices=["flat", "hierarchical"], default="flat",
              help="How c is read: one RNN over its tokens (Mirror, CVAE), or VHRED "
              "(Serban et al. 2017): an RNN per turn and a context RNN over the turns of "
              "c and then x, whose state the posterior and every decoder step also read.")
    group.add("--mirror_bidirectional", "-mirror_bidirectional", action="store_true",
              help="Bidirectional context and utterance encoders.")
    group.add("--mirror_share_dec_embeddings", "-mirror_share_dec_embeddings",
              action="store_true", help="Decoders use the encoders' embedding table "
              "(default: each decoder has its own, as the reference code).")
    group.add("--mirror_share_generators", "-mirror_share_generators",
              action="store_true", help="One output layer for all four decoders.")

    group = parser.add_argument_group("Loss/Mirror")
    number(group, "mirror_kl_anneal_steps", int, "[0, inf)", 10000,
           "KL weight rises linearly from 0 to -mirror_kl_weight "
           "over this many training batches; 0 keeps it constant.")
    number(group, "mirror_kl_weight", float, "[0, inf)", 1.0,
           "Final (or constant) weight of KL(q||p).")
    number(group, "mirror_backward_weight", float, "[0, inf)", 1.0,
           "Extra weight on the backward terms log p(x|c,z) and "
           "log p(x|c,z,y) (Eq. 6 has 1: every term gets 1/2).")

    group = parser.add_argument_group("Latent/Mirror")
    number(group, "mirror_bow_weight", float, "[0, inf)", 0.0,
           "Weight of the bag-of-words loss (Zhao et al. 2017): an MLP from "
           "[z; the prior's input] predicts the utterance's words, order ignored, so z "
           "must carry them. 0 switches it off (the paper's Eq. 6).")
    group.add("--mirror_bow_sides", "-mirror_bow_sides", choices=["auto", "y", "xy"],
              default="auto", help="Utterances the bag-of-words loss predicts: auto = "
              "the sides the decoders model (Mirror: x and y; the CVAE: y).")
    number(group, "mirror_free_bits", float, "[0, inf)", 0.0,
           "KL thresholding (free bits): the loss sees max(KL, this) in nats, "
           "so the KL below it costs nothing. 0 switches it off.")
    group.add("--mirror_free_bits_mode", "-mirror_free_bits_mode",
              choices=["sentence", "dim"], default="sentence",
              help="Threshold each sentence's KL (DialogVED's target KL) or each z "
              "dimension's batch-mean KL (Kingma et al. 2016).")
    number(group, "mirror_kl_anneal_cycles", int, "[1, inf)", 1,
           "Cyclical KL annealing (Fu et al. 2019): repeat the "
           "-mirror_kl_anneal_steps schedule this many times; 1 is the monotonic ramp.")
    number(group, "mirror_kl_anneal_ratio", float, "(0, 1]", 1.0,
           "Fraction of each annealing cycle spent rising; the rest "
           "holds -mirror_kl_weight (Fu et al.: 0.5).")
    number(group, "mirror_word_dropout", float, "[0, 1)", 0.0,
           "Replace each teacher-forced decoder input word by <unk> with this "
           "probability in training (Bowman et al. 2016), so the decoders lean on z.")
    number(group, "mirror_iw_samples", int, "[0, inf)", 0,
           "At validation, an importance-weighted estimate of -log p(y|c,x) with "
           "this many posterior samples (Burda et al. 2016); 0 switches it off.")
    group.add("--mirror_select", "-mirror_select",
              choices=["posterior", "prior", "elbo"], default="posterior",
              help="What the validation perplexity (the stock line, early stopping and "
              "-mirror_keep_best) measures: Dec1 with z from the posterior mean, from "
              "the prior mean (what decoding sees), or the ELBO (posterior NLL + KL).")
    group.add("--mirror_keep_best", "-mirror_keep_best", action="store_true",
              help="Keep the checkpoint with the best validation perplexity (as "
              "-mirror_select measures it) as <save_model>_best_step_<N>.pt.")

    group = parser.add_argument_group("Reliability/Mirror")
    group.add("--mirror_nonfinite", "-mirror_nonfinite", choices=["stop", "skip"],
              default="stop", help="A NaN/inf loss term: stop with the step and the term "
              "named, or skip the batch (no update) and log it (see docs/reliability.md).")
    number(group, "mirror_kl_collapse_threshold", float, "[0, inf)", 0.1,
           "KL(q||p) per sentence (nats) under which "
           "a training batch counts towards a KL-collapse warning.")
    number(group, "mirror_kl_collapse_steps", int, "[0, inf)", 1000,
           "Warn in the log after this many consecutive training "
           "batches under -mirror_kl_collapse_threshold; 0 switches the check off.")

    group = parser.add_argument_group("Training/Mirror")
    group.add("--mirror_captured_step", "-mirror_captured_step",
              choices=["auto", "on", "off"], default="auto", help="Train Mirror on one "
              "GPU with its step replayed from CUDA graphs, one per length bucket (on), "
              "or with the stock eager step (off). auto: on for batches of at most %d "
              "sentences, where the host limits the eager step. Where a graph cannot be "
              "captured (CPU, several GPUs, -input_feed 1, bidirectional or hierarchical "
              "encoders, -truncated_decoder, an optimizer other than adam) the stock "
              "step runs, and the log says why (docs/performance.md)."
              % CAPTURED_STEP_AUTO_BATCH)
    group.add("--mirror_checkpoint_writer", "-mirror_checkpoint_writer",
              choices=["background", "inline"], default="background",
              help="Write checkpoints while training goes on, from a copy in host memory "
              "taken at the save (background; the next save and the end of training wait "
              "for it), or before training goes on, as stock OpenNMT-py (inline). Either "
              "way a checkpoint lands whole or not at all, and the one it replaces is "
              "removed only after it landed.")
    number(group, "mirror_gpu_memory_gb", float, "[0, inf)", 0.0,
           "Cap this training's GPU memory at this many GB (any model; 0: no cap), so "
           "that trainings sharing one card cannot starve each other: the allocator "
           "frees its cached blocks before it fails, and the captured step runs new "
           "bucket keys eagerly once a capture no longer fits (results/run.py sets it).")

    group = parser.add_argument_group("Distributed/Mirror")
    group.add("--mirror_overlap_allreduce", "-mirror_overlap_allreduce",
              choices=["on", "off"], default="on", help="Data-parallel training "
              "(-world_size > 1): all-reduce the gradients in buckets while the backward "
              "runs (on), or after it with OpenNMT-py's own all-reduce (off). Same sums, "
              "same rescaling (see docs/performance.md).")
    number(group, "mirror_allreduce_bucket_mb", float, "(0, inf)", 25.0,
           "Bucket size of -mirror_overlap_allreduce on, in MB of "
           "gradients (DistributedDataParallel's default).")

    group = parser.add_argument_group("Translate/Mirror")
    group.add("--mirror_z", "-mirror_z", choices=["mean", "sample"], default=None,
              help="z at decoding time: the prior's mean (default) or a sample "
              "(seeded by -seed).")
    number(group, "mirror_num_z", int, "[1, %d]" % MAX_NUM_Z, 1,
           "Draw this many prior samples of z per input and decode each with its "
           "own beam: K x n_best lines per input, or n_best with -mirror_rerank. At most "
           "%d: the batch is decoded as K x beam_size rows per input, each step's "
           "log-probabilities a vocabulary-wide row per beam." % MAX_NUM_Z)
    group.add("--mirror_captured_beam", "-mirror_captured_beam", choices=["auto", "off"],
              default="auto", help="Beam search with Dec1's step (decoder, output layer, "
              "top-k, state reordering) replayed from CUDA graphs, one per shape (auto), "
              "or the stock step (off). The stock loop also runs on the CPU and with "
              "-input_feed 1, random sampling, -block_ngram_repeat, coverage penalties, "
              "-replace_unk, -attn_debug, -tgt_file_prefix or -dc_model; the log says why.")
    group.add("--mirror_rerank", "-mirror_rerank", action="store_true",
              help="Re-rank the K x n_best candidates by log p(y|c,x,z) + lambda "
              "log p(x|c,z,y) (Dec3, the backward decoder) + gamma |y|; keep n_best.")
    number(group, "mirror_rerank_lambda", float, "(-inf, inf)", 1.0,
           "Weight of Dec3's log p(x|c,z,y) in -mirror_rerank.")
    number(group, "mirror_rerank_gamma", float, "(-inf, inf)", 0.0,
           "Length bonus per token of y in -mirror_rerank.")
    group.add("--mirror_rerank_scores", "-mirror_rerank_scores", type=str, default=None,
              help="Write every candidate's log p(y|c,x,z), log p(x|c,z,y) (0 without "
              "Dec3) and |y| to this TSV, the score file that `python -m "
              "onmt_mirror.rerank tune` picks lambda and gamma on (docs/decoding.md).")
    add_dc_options(parser)


def add_dc_options(parser):
    """DC decoding (Baheti et al. 2018): see docs/dc.md and onmt_mirror/dc/."""
    group = parser.add_argument_group("Translate/DC")
    group.add("--dc_model", "-dc_model", type=str, default=None,
              help="Folder of DC side models (`python -m onmt_mirror.dc fit`): beam "
              "search then scores log p(y|src) + dc_alpha sim_topic + dc_beta sim_SIF, "
              "on partial and finished hypotheses.")
    number(group, "dc_alpha", float, "(-inf, inf)", 1.5,
           "Weight of the topic similarity (default: the authors' code's 1.5).")
    number(group, "dc_beta", float, "(-inf, inf)", 2.0,
           "Weight of the SIF semantic similarity (default: the authors' code's "
           "2.0).")


@dataclass
class MirrorConfig:
    """Everything the Mirror model needs, read once from OpenNMT-py's option namespace."""

    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int
    query_id: int
    emb_size: int = 200
    hidden_size: int = 1000  # paper: LSTMs of 1000
    enc_layers: int = 2
    dec_layers: int = 2
    z_size: int = 160
    dropout: float = 0.3
    bidirectional: bool = False
    input_feed: bool = True  # False: one cuDNN call per decoder, attention after
    attn_type: str = "general"  # Luong "general", as the reference
    decoders: tuple = tuple(DECODERS)
    prior: str = "c"
    share_dec_embeddings: bool = False
    share_generators: bool = False
    context_encoder: str = "flat"  # "hierarchical": VHRED's per-turn context encoder
    turn_id: int = -1  # ｟mirror_turn｠, where the hierarchical encoder splits c
    kl_anneal_steps: int = 10000
    kl_weight: float = 1.0
    backward_weight: float = 1.0
    unk_id: int = 0
    # the latent remedies and diagnostics (Latent/Mirror options); 0 switches each off
    kl_anneal_cycles: int = 1
    kl_anneal_ratio: float = 1.0
    bow_weight: float = 0.0
    bow_sides: str = "auto"
    free_bits: float = 0.0
    free_bits_mode: str = "sentence"
    word_dropout: float = 0.0
    iw_samples: int = 0

    @classmethod
    def from_opt(cls, opt, vocab):
        decoders = tuple(d.strip() for d in opt.mirror_decoders.split(",") if d.strip())
        unknown = [d for d in decoders if d not in DECODERS]
        if unknown or "y_cxz" not in decoders:
            from onmt_mirror.errors import MirrorError

            raise MirrorError("-mirror_decoders %r: choose from %s, y_cxz included"
                              % (opt.mirror_decoders, ",".join(DECODERS)))
        dropout = opt.dropout[0] if isinstance(opt.dropout, list) else opt.dropout
        return cls(
            vocab_size=len(vocab),
            pad_id=vocab["<blank>"],
            bos_id=vocab["<s>"],
            eos_id=vocab["</s>"],
            query_id=vocab[QUERY_TOKEN],
            turn_id=vocab[TURN_TOKEN],
            context_encoder=getattr(opt, "mirror_context_encoder", "flat"),
            emb_size=opt.src_word_vec_size,
            hidden_size=opt.enc_hid_size,
            enc_layers=opt.enc_layers,
            dec_layers=opt.dec_layers,
            z_size=opt.mirror_z_size,
            dropout=dropout,
            bidirectional=opt.mirror_bidirectional,
            input_feed=bool(opt.input_feed),
            attn_type=opt.global_attention,
            decoders=decoders,
            prior=opt.mirror_prior,
            share_dec_embeddings=opt.mirror_share_dec_embeddings or opt.share_embeddings,
            share_generators=opt.mirror_share_generators,
            kl_anneal_steps=opt.mirror_kl_anneal_steps,
            kl_weight=opt.mirror_kl_weight,
            backward_weight=opt.mirror_backward_weight,
            unk_id=vocab["<unk>"],
            # checkpoints from before these options have none of them: the defaults
            **{f: getattr(opt, "mirror_" + f, default) for f, default in (
                ("kl_anneal_cycles", 1), ("kl_anneal_ratio", 1.0), ("bow_weight", 0.0),
                ("bow_sides", "auto"), ("free_bits", 0.0),
                ("free_bits_mode", "sentence"), ("word_dropout", 0.0),
                ("iw_samples", 0))},
        )
