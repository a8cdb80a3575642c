"""The one place onmt_mirror touches OpenNMT-py internals (checked against 3.5.1 only).

Imported by the .pth hook right after `import onmt`, so before any CLI builds its parser.
OpenNMT-py has registries for transforms only; everything else below replaces a module
attribute that the stock code looks up at call time. Each entry says why.
"""
import argparse
import sys

import onmt

from onmt_mirror.errors import MirrorError, install_excepthook

ONMT_VERSION = "3.5.1"

# Bad input must read as one line, not a traceback (also for errors from data workers).
install_excepthook()

if onmt.__version__ != ONMT_VERSION:
    raise MirrorError("onmt_mirror needs OpenNMT-py %s, found %s: pip install --no-deps "
                      "opennmt-py==%s (or set ONMT_MIRROR_DISABLE=1)"
                      % (ONMT_VERSION, onmt.__version__, ONMT_VERSION))

import torch  # noqa: E402
import onmt.model_builder  # noqa: E402
import onmt.trainer  # noqa: E402
import onmt.utils  # noqa: E402
import onmt.utils.report_manager  # noqa: E402
from onmt.transforms import register_transform  # noqa: E402
from onmt.utils.logging import logger  # noqa: E402

from onmt_mirror.losses.mirror_loss import MirrorLoss, MirrorStatistics  # noqa: E402
from onmt_mirror.models.hred import HRED_ENCODER, HREDEncoder  # noqa: E402
from onmt_mirror.models.mirror import MirrorModel  # noqa: E402
from onmt_mirror.opts import MIRROR_ENCODER, QUERY_TOKEN, MirrorConfig  # noqa: E402
from onmt_mirror.transforms.mirror_triple import MirrorTripleTransform  # noqa: E402

# 1. Transform registry (public API): also how Mirror's options reach all three parsers.
if "mirror_triple" not in onmt.transforms.AVAILABLE_TRANSFORMS:
    register_transform("mirror_triple")(MirrorTripleTransform)
if "mirror_backward" not in onmt.transforms.AVAILABLE_TRANSFORMS:  # MMI's p(x|y) data
    from onmt_mirror.transforms.mirror_backward import MirrorBackwardTransform

    register_transform("mirror_backward")(MirrorBackwardTransform)

# 1b. Encoder registry (public API): HRED's hierarchical encoder (`encoder_type: hred`);
#     the stock builder pairs it with the stock RNN decoder (see build_hred below).
if HRED_ENCODER not in onmt.encoders.str2enc:
    onmt.encoders.register_encoder(HRED_ENCODER)(HREDEncoder)

# 2. Checkpoints: torch>=2.6 loads with weights_only=True, and OpenNMT-py checkpoints hold
#    the options as an argparse.Namespace. Allow that one class; safe loading stays on.
torch.serialization.add_safe_globals([argparse.Namespace])

# 3. Model builder: there is no model registry; build_base_model (train and translate)
#    calls build_task_specific_model through the module, so replacing it there suffices.
_stock_build_task_specific_model = onmt.model_builder.build_task_specific_model


def build_mirror(model_opt, vocabs):
    src, tgt = vocabs["src"], vocabs["tgt"]
    if src.ids_to_tokens != tgt.ids_to_tokens:
        raise MirrorError("Mirror reads x and y with one utterance encoder and decodes "
                          "both: build the vocabulary with -share_vocab")
    if QUERY_TOKEN not in tgt.ids_to_tokens:
        raise MirrorError("the vocabulary lacks %s: build it with -transforms "
                          "mirror_triple" % QUERY_TOKEN)
    if model_opt.copy_attn or model_opt.share_decoder_embeddings:
        raise MirrorError("Mirror does not support -copy_attn or -share_decoder_embeddings"
                          " (use -mirror_share_dec_embeddings / -mirror_share_generators)")
    return MirrorModel(MirrorConfig.from_opt(model_opt, tgt))


def build_hred(model_opt, vocabs):
    """The stock seq2seq builder (HREDEncoder + stock RNN decoder), then the encoder
    learns which vocabulary ids separate turns (they are not weights)."""
    from onmt_mirror.opts import TURN_TOKEN

    src = vocabs["src"]
    if QUERY_TOKEN not in src.ids_to_tokens or TURN_TOKEN not in src.ids_to_tokens:
        raise MirrorError("HRED splits src into turns at %s and %s: build the vocabulary "
                          "with -transforms mirror_triple" % (TURN_TOKEN, QUERY_TOKEN))
    model = _stock_build_task_specific_model(model_opt, vocabs)
    model.encoder.set_separators([src[TURN_TOKEN], src[QUERY_TOKEN]])
    return model


def build_task_specific_model(model_opt, vocabs):
    if getattr(model_opt, "encoder_type", None) == MIRROR_ENCODER:
        return build_mirror(model_opt, vocabs)
    if getattr(model_opt, "encoder_type", None) == HRED_ENCODER:
        return build_hred(model_opt, vocabs)
    return _stock_build_task_specific_model(model_opt, vocabs)


onmt.model_builder.build_task_specific_model = build_task_specific_model

# 4. Loss: build_trainer calls `LossCompute.from_opts` by the name imported into
#    onmt.trainer (no registry), so that name is the one to replace.
_StockLossCompute = onmt.trainer.LossCompute


class LossComputeFactory:
    """Stock LossCompute for stock models, MirrorLoss for Mirror."""

    @classmethod
    def from_opts(cls, opt, model, vocab, train=True):
        if not isinstance(model, MirrorModel):
            return _StockLossCompute.from_opts(opt, model, vocab, train)
        if opt.normalization != "sents":
            # build_trainer reads opt.normalization right after this call
            logger.info("Mirror normalises Eq. 6 per sentence: -normalization sents")
            opt.normalization = "sents"
        device = next(model.parameters()).device
        return MirrorLoss(model.cfg.decoders, model.cfg.backward_weight,
                          model.cfg.pad_id).to(device)


onmt.trainer.LossCompute = LossComputeFactory

# 5. Statistics: the Trainer and ReportMgr create `onmt.utils.Statistics()` and the stock
#    update() drops extra fields; a superset subclass keeps Mirror's per-term sums.
onmt.utils.Statistics = MirrorStatistics

# 6. Validation report: ReportMgr._report_step logs only the stock ppl/acc of the
#    validation statistics; Dec1's perplexity with z from the prior (what decoding sees)
#    and the other decoders' would otherwise reach TensorBoard only.
_stock_report_step = onmt.utils.report_manager.ReportMgr._report_step


def _report_step(self, lr, patience, step, valid_stats=None, train_stats=None):
    _stock_report_step(self, lr, patience, step, valid_stats=valid_stats,
                       train_stats=train_stats)
    summary = valid_stats.mirror_summary() if valid_stats is not None else None
    if summary:
        self.log("Mirror validation; %s", "; ".join("%s: %.4g" % kv
                                                  for kv in summary.items()))


onmt.utils.report_manager.ReportMgr._report_step = _report_step

# 7. Checkpoint loading for translation: -mirror_z lives in the translate options, the
#    model is built from the checkpoint's; and -src needs the mirror_triple transform
#    even when the user did not list it.
_stock_load_test_model = onmt.model_builder.load_test_model
_INHERITED = ("mirror_context_turns", "mirror_max_context_tokens",
              "mirror_max_utterance_tokens")


def load_test_model(opt, device_id=0, model_path=None):
    path = model_path or opt.models[0]
    vocabs, model, model_opt = _stock_load_test_model(opt, device_id, model_path)
    if not isinstance(model, MirrorModel):
        if getattr(opt, "mirror_z", None) is not None:
            raise MirrorError("%s is not a Mirror checkpoint (encoder_type %r): "
                              "-mirror_z applies to Mirror models only"
                              % (path, model_opt.encoder_type))
        # baselines (seq2seq, HRED) trained on mirror_triple read -src the same way
        if "mirror_triple" not in (getattr(model_opt, "_all_transform", None) or ()):
            return vocabs, model, model_opt
    else:
        model.z_mode = getattr(opt, "mirror_z", None) or "mean"
    transforms = list(getattr(opt, "transforms", None) or [])
    if "mirror_triple" not in transforms:
        from onmt_mirror.data_check import check_pair

        opt.transforms = opt._all_transform = ["mirror_triple"] + transforms
        for name in _INHERITED:
            setattr(opt, name, getattr(model_opt, name))
        check_pair("-src", opt.src, getattr(opt, "tgt", None), opt)
        logger.info("Mirror checkpoint: -transforms mirror_triple added for -src")
    return vocabs, model, model_opt


onmt.model_builder.load_test_model = load_test_model

# 8. DC decoding (Baheti et al. 2018): the stock beam search has no per-step scorer hook.
#    With -dc_model the Translator gets the side models, each beam search a running
#    state, and advance() adds α·Δsim_topic + β·Δsim_SIF to every candidate's log-prob
#    (batched over the vocabulary, see onmt_mirror/dc/scorer.py). Without -dc_model
#    each wrapper only calls the stock code.
import onmt.translate.beam_search  # noqa: E402
import onmt.translate.translator  # noqa: E402

from onmt_mirror.dc.scorer import dc_scorer_from_opt  # noqa: E402

_Translator = onmt.translate.translator.Translator
_Beam = onmt.translate.beam_search.BeamSearchBase
_stock_translator_from_opt = _Translator.from_opt.__func__
_stock_translate_with_strategy = _Translator._translate_batch_with_strategy
_stock_beam_advance = _Beam.advance
_stock_remove_finished_batches = _Beam.remove_finished_batches


def _translator_from_opt(cls, model, vocabs, opt, model_opt, *args, **kwargs):
    translator = _stock_translator_from_opt(cls, model, vocabs, opt, model_opt, *args,
                                            **kwargs)
    translator.dc_scorer = dc_scorer_from_opt(opt, vocabs, logger)
    return translator


def _translate_batch_with_strategy(self, batch, decode_strategy):
    if getattr(self, "dc_scorer", None) is not None:
        decode_strategy.dc_state = self.dc_scorer.start(batch["src"][:, :, 0],
                                                        decode_strategy.beam_size)
    return _stock_translate_with_strategy(self, batch, decode_strategy)


def _beam_advance(self, log_probs, attn):
    state = getattr(self, "dc_state", None)
    if state is None:
        return _stock_beam_advance(self, log_probs, attn)
    log_probs += state.bonus().to(log_probs.dtype)
    _stock_beam_advance(self, log_probs, attn)
    state.advance(self.select_indices, self.topk_ids.view(-1))


def _remove_finished_batches(self, _B_new, _B_old, non_finished, *args):
    _stock_remove_finished_batches(self, _B_new, _B_old, non_finished, *args)
    if getattr(self, "dc_state", None) is not None:
        self.dc_state.keep_batches(non_finished)


_Translator.from_opt = classmethod(_translator_from_opt)
_Translator._translate_batch_with_strategy = _translate_batch_with_strategy
_Beam.advance = _beam_advance
_Beam.remove_finished_batches = _remove_finished_batches