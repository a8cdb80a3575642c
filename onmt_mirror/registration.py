"""The one place onmt_mirror touches OpenNMT-py internals (checked against 3.5.1 only).

Imported by the .pth hook right after `import onmt`, so before any CLI builds its parser.
OpenNMT-py has registries for transforms only; everything else below replaces a module
attribute that the stock code looks up at call time. Each entry says why.
"""
import argparse
import functools
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
import onmt.inputters.dynamic_iterator  # noqa: E402
import onmt.model_builder  # noqa: E402
import onmt.trainer  # noqa: E402
import onmt.utils  # noqa: E402
import onmt.utils.optimizers  # noqa: E402
import onmt.utils.report_manager  # noqa: E402
from onmt.transforms import register_transform  # noqa: E402
from onmt.utils.logging import logger  # noqa: E402

from onmt_mirror.losses.mirror_loss import MirrorLoss, MirrorStatistics  # noqa: E402
from onmt_mirror.models.hred import HRED_ENCODER, HREDEncoder  # noqa: E402
from onmt_mirror.models.mirror import MirrorModel  # noqa: E402
from onmt_mirror.opts import MIRROR_ENCODER, QUERY_TOKEN, MirrorConfig  # noqa: E402
from onmt_mirror.transforms.mirror_triple import (  # noqa: E402
    MirrorTripleTransform,
    triple_sort_key,
)

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

# 1c. Batching: DynamicDatasetIter sorts each bucket with the module-global
#     text_sort_key (no option selects another), read when the iterator is built, in
#     the data workers too. Triples (src with ｟mirror_query｠) sort by all three lengths;
#     any other line keeps the stock key, so stock models batch as before.
_stock_text_sort_key = onmt.inputters.dynamic_iterator.text_sort_key
onmt.inputters.dynamic_iterator.text_sort_key = functools.partial(
    triple_sort_key, stock_key=_stock_text_sort_key)

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
                          model.cfg.pad_id, model.cfg.bow_weight,
                          opt.mirror_select).to(device)


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

# 6b. After each validation (Trainer._report_step runs on the validating rank only): the
#     KL-collapse warning on the validation KL, so that short runs see it, and with
#     -mirror_keep_best the checkpoint of the best validation perplexity (by
#     -mirror_select). ModelSaver has no notion of a best checkpoint, and its _save
#     gathers over all ranks, so the best one is written here from this rank's
#     (replicated) weights, in the stock checkpoint layout, atomically.
_stock_trainer_report_step = onmt.trainer.Trainer._report_step


def _trainer_report_step(self, learning_rate, step, valid_stats=None, train_stats=None):
    result = _stock_trainer_report_step(self, learning_rate, step, valid_stats=valid_stats,
                                        train_stats=train_stats)
    loss = self.valid_loss
    if isinstance(loss, MirrorLoss) and valid_stats is not None and valid_stats.n_words:
        loss.check_validation_kl(valid_stats.mirror_summary(), step)
        if getattr(loss, "keep_best", False) and self.model_saver is not None:
            _keep_best(self, step, valid_stats.ppl())
    return result


def _keep_best(trainer, step, ppl):
    from onmt.inputters.inputter import vocabs_to_dict

    if ppl >= getattr(trainer, "mirror_best_ppl", float("inf")):
        return
    saver = trainer.model_saver
    state = trainer.model.state_dict()
    path = "%s_best_step_%d.pt" % (saver.base_path, step)
    onmt.models.model_saver.torch.save({
        "model": {k: v for k, v in state.items() if "generator" not in k},
        "generator": trainer.model.generator.state_dict(),
        "vocab": vocabs_to_dict(saver.vocabs), "opt": saver.model_opt,
        "optim": saver.optim.state_dict()}, path)
    previous = getattr(trainer, "mirror_best_path", None)
    if previous and os.path.exists(previous):
        os.remove(previous)
    trainer.mirror_best_ppl, trainer.mirror_best_path = ppl, path
    logger.info("Best validation perplexity so far (%.4g, -mirror_select %s): %s", ppl,
                trainer.valid_loss.select, path)


onmt.trainer.Trainer._report_step = _trainer_report_step

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

# 9. Optimizer: build_torch_optimizer makes `-optim adam` torch's multi-tensor Adam, which
#    for Mirror's ~228M parameters cost 4.7 ms of GPU time a step at batch 512 (H200)
#    and a host read of every parameter's step count; the fused kernel took 2.0 ms, and
#    with it the fp16 GradScaler needs no host sync to skip a step. Same update rule and
#    state dict, so checkpoints resume either way; Mirror on CUDA only, stock models keep
#    the stock optimizer. Optimizer.from_opt reaches it by module global.
_stock_build_torch_optimizer = onmt.utils.optimizers.build_torch_optimizer


def _build_torch_optimizer(model, opt):
    params = [p for p in model.parameters() if p.requires_grad]
    if (opt.optim == "adam" and isinstance(model, MirrorModel) and params
            and all(p.is_cuda for p in params)):
        return torch.optim.Adam(params, lr=opt.learning_rate,
                                betas=(opt.adam_beta1, opt.adam_beta2), eps=1e-8,
                                fused=True)
    return _stock_build_torch_optimizer(model, opt)


onmt.utils.optimizers.build_torch_optimizer = _build_torch_optimizer

# R1. Reliability — checkpoint files: ModelSaver writes with torch.save straight onto the
#     final name (a crash mid-save leaves a truncated file), and a checkpoint that weights-
#     only loading refuses is a long traceback. model_saver reaches torch.save/torch.load
#     through its module-global `torch` (load_checkpoint serves train and translate), so a
#     view of torch with atomic save and explicit weights-only load replaces that name.
import itertools  # noqa: E402
import os  # noqa: E402
import traceback  # noqa: E402

import onmt.inference_engine  # noqa: E402
import onmt.models.model_saver  # noqa: E402
import onmt.translate.translator  # noqa: E402
import onmt.utils.parse  # noqa: E402
from onmt.transforms.transform import Transform, TransformPipe  # noqa: E402

from onmt_mirror import resume  # noqa: E402
from onmt_mirror.checkpoint_io import AtomicTextOutput, TorchCheckpointIO  # noqa: E402
from onmt_mirror.errors import MissingFileError  # noqa: E402
from onmt_mirror.opts import add_mirror_options  # noqa: E402

onmt.models.model_saver.torch = TorchCheckpointIO()

# R2. Reliability — translation output: build_translator opens (truncates) -output before
#     loading the model, so a failing onmt_translate leaves an empty file where the last
#     predictions were. The output now goes to a temporary file that replaces -output
#     only when InferenceEnginePY._translate returned (single process; multi-GPU
#     inference keeps the stock file). Once the vocabulary is loaded, a -src whose
#     tokens are mostly unknown (e.g. typed "tea?" where the corpus has "tea ?") gets a
#     warning: stock decoding reads every such word as <unk> without a word.
_stock_build_translator = onmt.translate.translator.build_translator
_stock_engine_translate = onmt.inference_engine.InferenceEnginePY._translate
UNKNOWN_WARNING_SHARE = 0.10  # the demo's tokenised test.src: 9.1%; typed: 28.7%
UNKNOWN_CHECK_LINES = 10000


def build_translator(opt, device_id=0, report_score=True, logger=None, out_file=None):
    if out_file is None and getattr(opt, "world_size", 1) <= 1:
        out_file = AtomicTextOutput(opt.output)
    translator = _stock_build_translator(opt, device_id, report_score, logger, out_file)
    if os.path.isfile(getattr(opt, "src", None) or ""):
        _warn_unknown_source(opt, set(translator.vocabs["src"].ids_to_tokens))
    return translator


def _warn_unknown_source(opt, vocabulary):
    from onmt_mirror.chat.text import unknown_shares

    with open(opt.src, encoding="utf-8", errors="replace") as f:
        lines = list(itertools.islice(f, UNKNOWN_CHECK_LINES))
    share, tokenised = unknown_shares(lines, vocabulary,
                                      getattr(opt, "mirror_turn_sep", "__eou__"))
    if share > UNKNOWN_WARNING_SHARE:
        hint = (" (tokenised as the training data was, %.1f%%: see docs/server.md, "
                "\"Typed text\")" % (100 * tokenised) if tokenised < share / 2 else "")
        logger.warning("-src %s: %.1f%% of the tokens in its first %d lines are not in "
                       "the model's vocabulary and are read as <unk>; is it tokenised "
                       "like the training data?%s", opt.src, 100 * share, len(lines), hint)


def _engine_translate(self, infer_iter):
    out = self.translator.out_file
    if not isinstance(out, AtomicTextOutput):
        return _stock_engine_translate(self, infer_iter)
    try:
        result = _stock_engine_translate(self, infer_iter)
    except BaseException:
        out.discard()
        raise
    out.commit()
    return result


onmt.translate.translator.build_translator = build_translator
onmt.inference_engine.InferenceEnginePY._translate = _engine_translate


# R3. Reliability — a missing corpus or vocabulary file is an OSError traceback from
#     DataOptsCheckerMixin._validate_file ("Please check path of your src vocab file!");
#     make it one line with the path (still an OSError for callers that catch one).
def _validate_file(file_path, info):
    if not os.path.isfile(file_path):
        hint = " (build it with onmt_build_vocab)" if info.endswith("vocab") else ""
        raise MissingFileError("%s file not found: %s%s" % (info, file_path, hint))


onmt.utils.parse.DataOptsCheckerMixin._validate_file = staticmethod(_validate_file)

# R3b. Reliability — paths found bad only after the work, leftovers of a killed save, and
#      onmt_server unloading the model for a request the model never saw.
#      - onmt_build_vocab counts the whole corpus, then opens -src_vocab/-tgt_vocab: a
#        directory (IsADirectoryError) or an existing file without -overwrite (IOError)
#        was a traceback at the end. Checked in validate_prepare_opts, before reading.
#        (onmt_translate -output: AtomicTextOutput checks it before the model loads, R2.)
#      - a process killed inside atomic_save (R1) leaves `.<name>_step_N.pt.XXXX.tmp`
#        (the size of a checkpoint); build_model_saver, at the start of every run with
#        that -save_model, removes them with a log line.
#      - the stock /translate route unloads the model after any ServerModelError, so a
#        request refused by the Mirror preprocess hook (RequestRefused) cost the next
#        request a reload; ServerModel.unload now skips that one unload (same thread).
import re  # noqa: E402
import threading  # noqa: E402

import onmt.train_single  # noqa: E402
from onmt.translate.translation_server import ServerModel  # noqa: E402

from onmt_mirror.chat.preprocess import RequestRefused  # noqa: E402

_stock_validate_vocab_opts = onmt.utils.parse.DataOptsCheckerMixin._validate_vocab_opts.__func__


def _validate_vocab_opts(cls, opt, build_vocab_only=False):
    _stock_validate_vocab_opts(cls, opt, build_vocab_only)
    if not build_vocab_only:
        return
    for path in [opt.src_vocab] + ([] if opt.share_vocab else [opt.tgt_vocab]):
        if os.path.isdir(path):
            raise MirrorError("vocabulary output %s is a directory: give a file name"
                              % path)
        if os.path.exists(path) and not opt.overwrite:
            raise MirrorError("vocabulary output %s exists (add -overwrite to replace it)"
                              % path)


onmt.utils.parse.DataOptsCheckerMixin._validate_vocab_opts = classmethod(
    _validate_vocab_opts)
_stock_build_model_saver = onmt.train_single.build_model_saver


def remove_stale_temporaries(save_model):
    """Delete the temporaries a killed atomic_save left for this -save_model; -> names."""
    folder, base = os.path.split(os.path.abspath(save_model))
    stale = re.compile(r"\.%s_(best_)?step_\d+\.pt\.\w+\.tmp$" % re.escape(base))
    removed = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if stale.match(name):
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:  # another process of this run got there first
                continue
            removed.append(name)
    if removed:
        logger.info("Removed %d temporary file(s) left by an interrupted checkpoint save "
                    "in %s: %s", len(removed), folder, ", ".join(removed))
    return removed


def _build_model_saver(model_opt, opt, model, vocabs, optim, device_id):
    if device_id <= 0:  # one process (CPU: -1, GPU rank 0) cleans up
        remove_stale_temporaries(opt.save_model)
    return _stock_build_model_saver(model_opt, opt, model, vocabs, optim, device_id)


onmt.train_single.build_model_saver = _build_model_saver
_refused = threading.local()  # the ServerModel whose request this thread just refused
_stock_server_model_run = ServerModel.run
_stock_server_model_unload = ServerModel.unload


def _server_model_run(self, inputs):
    try:
        return _stock_server_model_run(self, inputs)
    except RequestRefused:
        _refused.model = self
        self.reset_unload_timer()  # run() stopped it; the model stays in use
        raise


def _server_model_unload(self):
    if getattr(_refused, "model", None) is self:
        _refused.model = None
        self.logger.info("Model #%d stays loaded: the request was refused before it "
                         "reached the model", self.model_id)
        return
    _stock_server_model_unload(self)


ServerModel.run = _server_model_run
ServerModel.unload = _server_model_unload

# R4. Reliability — Mirror's model, loss and guard options are silently ignored by stock
#     models; validate_train_opts (onmt_train only, before anything is written) now
#     refuses them when they differ from their defaults and the model is not Mirror.
_MIRROR_ONLY_GROUPS = ("Model/Mirror", "Loss/Mirror", "Latent/Mirror",
                       "Reliability/Mirror", "Distributed/Mirror")
_stock_validate_train_opts = onmt.utils.parse.ArgumentParser.validate_train_opts.__func__


def _mirror_only_defaults():
    parser = onmt.utils.parse.ArgumentParser()
    add_mirror_options(parser)
    return {a.dest: a.default for g in parser._action_groups
            if g.title in _MIRROR_ONLY_GROUPS for a in g._group_actions}


def _validate_train_opts(cls, opt):
    _stock_validate_train_opts(cls, opt)
    if getattr(opt, "encoder_type", None) == MIRROR_ENCODER or opt.train_from:
        return
    given = [k for k, v in _mirror_only_defaults().items()
             if hasattr(opt, k) and getattr(opt, k) != v]
    if given:
        raise MirrorError("%s: Mirror option(s), but the model is encoder_type %r (use "
                          "-encoder_type %s, or drop them)"
                          % (", ".join("-" + k for k in given), opt.encoder_type,
                             MIRROR_ENCODER))


onmt.utils.parse.ArgumentParser.validate_train_opts = classmethod(_validate_train_opts)


# R5. Reliability — TransformPipe.stats reports only ObservableStats, so counts a transform
#     keeps itself (mirror_triple: truncated and skipped lines, e.g. a 10,000-token turn)
#     never reached the log; add every transform's own stats() (counts since start).
def _pipe_stats(self):
    own = ["\t\t\t* %s: %s" % (type(t).__name__, t.stats()) for t in self.transforms
           if type(t).stats is not Transform.stats and t.stats()]
    return "\n".join([m for m in [self.statistics.report()] if m] + own)


TransformPipe.stats = _pipe_stats

# R6. Reliability — exact resume: -train_from restores weights, optimizer and step but
#     restarts the data at the first batch and re-seeds the generators. The optimizer's
#     state dict (saved in every checkpoint) now also carries the batches consumed and the
#     generator states; on resume with the same corpora, Trainer.train replays the data
#     past them and restores the generators (onmt_mirror/resume.py). Trainer.train also
#     tells Mirror's loss the step, for its error messages.
_Optimizer = onmt.utils.optimizers.Optimizer
_stock_optim_state_dict = _Optimizer.state_dict
_stock_optim_from_opt = _Optimizer.from_opt.__func__
_stock_trainer_train = onmt.trainer.Trainer.train


def _optim_state_dict(self):
    state = _stock_optim_state_dict(self)
    state["mirror_resume"] = {"batches": getattr(self, "batches_seen", 0),
                              "rng": resume.rng_state()}
    return state


def _optim_from_opt(cls, model, opt, checkpoint=None):
    optim = _stock_optim_from_opt(cls, model, opt, checkpoint)
    saved = (checkpoint or {}).get("optim")
    if isinstance(saved, dict) and "mirror_resume" in saved and optim.training_step > 1:
        if getattr(checkpoint["opt"], "data", None) == getattr(opt, "data", None):
            optim.resume_from = saved["mirror_resume"]
        else:
            logger.info("-train_from with other corpora than the checkpoint's: the "
                        "training data starts at its first batch")
    return optim


def _trainer_train(self, train_iter, train_steps, *args, **kwargs):
    for loss in (self.train_loss, self.valid_loss):
        if isinstance(loss, MirrorLoss):
            loss.step_of = lambda: self.optim.training_step
    return _stock_trainer_train(self, resume.replay(train_iter, self.optim, logger),
                                train_steps, *args, **kwargs)


_Optimizer.state_dict = _optim_state_dict
_Optimizer.from_opt = classmethod(_optim_from_opt)
onmt.trainer.Trainer.train = _trainer_train

# R7. Reliability — Mirror's numerical guards read their options here (section 4 builds
#     the loss): -mirror_nonfinite, the KL-collapse warning, and train/valid mode (a
#     validation batch is never skipped). A skipped batch leaves no gradients, which
#     torch's GradScaler.step rejects ("No inf checks were recorded"): with fp16 the
#     scaler itself skips steps with inf/NaN gradients, so skip is refused there.
_mirror_loss_from_opts = LossComputeFactory.from_opts


def _guarded_loss_from_opts(cls, opt, model, vocab, train=True):
    loss = _mirror_loss_from_opts(opt, model, vocab, train)
    if isinstance(loss, MirrorLoss):
        if opt.mirror_nonfinite == "skip" and opt.model_dtype == "fp16":
            raise MirrorError("-mirror_nonfinite skip does not work with -model_dtype "
                              "fp16 (its gradient scaler already skips non-finite "
                              "steps): use -mirror_nonfinite stop")
        if opt.mirror_keep_best and opt.average_decay > 0:
            raise MirrorError("-mirror_keep_best saves the trained weights, not the "
                              "moving average of -average_decay: use one of the two")
        loss.train(train)
        loss.keep_best = opt.mirror_keep_best
        loss.nonfinite = opt.mirror_nonfinite
        loss.kl_collapse_threshold = opt.mirror_kl_collapse_threshold
        loss.kl_collapse_steps = opt.mirror_kl_collapse_steps
    return loss


LossComputeFactory.from_opts = classmethod(_guarded_loss_from_opts)


# R8. Reliability — Trainer._gradient_accumulation prints the traceback of any exception
#     but CUDA OOM before re-raising it; a MirrorError (e.g. a non-finite loss) is meant
#     to be the one line that the excepthook prints.
class _TracebackExceptMirrorError:
    def __getattr__(self, name):
        return getattr(traceback, name)

    @staticmethod
    def print_exc(*args, **kwargs):
        if not isinstance(sys.exc_info()[1], MirrorError):
            traceback.print_exc(*args, **kwargs)


onmt.trainer.traceback = _TracebackExceptMirrorError()

# 10. Decoding with K latent samples (-mirror_num_z, -mirror_rerank, -mirror_rerank_scores;
#     onmt_mirror/translate/multi_z.py). Beam search keeps one beam per batch row and
#     knows no latent, so translate_batch decodes the batch tiled K times (the decoding
#     interface draws a z per row) and joins each input's K n-best lists, or re-ranks them
#     with Dec3. Each beam keeps -n_best, but the stock output path writes
#     `Translator.n_best` lines per input and the server splits its replies by
#     `opt.n_best`: both become K x n_best (n_best with -mirror_rerank). With
#     -mirror_num_z 1 and neither re-ranking option the stock code runs untouched.
from onmt_mirror.translate.multi_z import MultiZ  # noqa: E402

_stock_translate_batch = _Translator.translate_batch
_from_opt_before_multi_z = _Translator.from_opt.__func__


def _translator_from_opt_multi_z(cls, model, vocabs, opt, model_opt, *args, **kwargs):
    translator = _from_opt_before_multi_z(cls, model, vocabs, opt, model_opt, *args,
                                          **kwargs)
    # a server reloading a model builds it again from the same opt, n_best set below
    beam_n_best = getattr(opt, "mirror_beam_n_best", opt.n_best)
    translator.multi_z = MultiZ.from_opt(model, vocabs, opt, model_opt, beam_n_best)
    if translator.multi_z is not None:
        opt.mirror_beam_n_best = beam_n_best
        translator.n_best = opt.n_best = translator.multi_z.lines_per_input
    return translator


def _translate_batch(self, batch, attn_debug):
    multi_z = getattr(self, "multi_z", None)
    if multi_z is None:
        return _stock_translate_batch(self, batch, attn_debug)
    tiled = multi_z.tile(batch)
    self.n_best = multi_z.n_best  # what each beam keeps (BeamSearch reads it)
    try:
        results = _stock_translate_batch(self, tiled, attn_debug)
    finally:
        self.n_best = multi_z.lines_per_input
    return multi_z.join(batch, tiled, results)


_Translator.from_opt = classmethod(_translator_from_opt_multi_z)
_Translator.translate_batch = _translate_batch


# U1. Usability — a GPU recipe on a machine without CUDA, and -tensorboard without the
#     tensorboard package. Stock OpenNMT-py fails late, with a traceback: onmt_train
#     with gpu_ranks [0] on a CPU-only torch ("module 'torch._C' has no attribute
#     '_cuda_setDevice'"), onmt_translate -gpu 0 ("Torch not compiled with CUDA
#     enabled"), tensorboard: true (ModuleNotFoundError once the model is built). The
#     option checks of train and translate (onmt_server's too) run before anything is
#     loaded or written; they now name the option to change in one line.
#     Also -num_workers 0: WeightedMixer._logging calls init_logger() (meant for a fresh
#     data worker) through its module global, and in the main process that replaced the
#     handlers, so -log_file stopped once data loading began. A configured logger is now
#     kept; a spawned worker's (no handlers yet) is set up as before.
import importlib.util  # noqa: E402
import logging  # noqa: E402

_stock_worker_init_logger = onmt.inputters.dynamic_iterator.init_logger


def _init_logger_unless_configured(*args, **kwargs):
    configured = logging.getLogger("onmt")
    if configured.handlers:
        return configured
    return _stock_worker_init_logger(*args, **kwargs)


onmt.inputters.dynamic_iterator.init_logger = _init_logger_unless_configured

_Parser = onmt.utils.parse.ArgumentParser
_usability_validate_train_opts = _Parser.validate_train_opts.__func__
_usability_validate_translate_opts = _Parser.validate_translate_opts.__func__


def _cuda_found():
    """(number of CUDA devices, why there are none) for the error line."""
    if torch.version.cuda is None:
        return 0, "torch %s is built without CUDA" % torch.__version__
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return count, "torch sees %d CUDA device%s" % (count, "" if count == 1 else "s")


def _check_gpus(opt):
    ranks = list(getattr(opt, "gpu_ranks", None) or [])
    gpu = getattr(opt, "gpu", -1)
    if not ranks and (gpu is None or gpu < 0):
        return
    count, found = _cuda_found()
    if len(ranks) > count:
        raise MirrorError("-gpu_ranks %s needs %d CUDA GPU%s, but %s: to run on the CPU, "
                          "give -gpu_ranks with no value (and -world_size 1)"
                          % (" ".join(map(str, ranks)), len(ranks),
                             "" if len(ranks) == 1 else "s", found))
    if gpu is not None and gpu >= count:
        raise MirrorError("-gpu %d needs a CUDA GPU, but %s: to run on the CPU, use -gpu -1"
                          % (gpu, found))


def _validate_train_opts_usability(cls, opt):
    _usability_validate_train_opts(cls, opt)
    _check_gpus(opt)
    if getattr(opt, "tensorboard", False) and importlib.util.find_spec("tensorboard") is None:
        raise MirrorError("-tensorboard needs the tensorboard package: pip install "
                          "'onmt-mirror[tb]' (or pip install tensorboard), or set "
                          "tensorboard: false")


def _validate_translate_opts_usability(cls, opt):
    _usability_validate_translate_opts(cls, opt)
    _check_gpus(opt)


_Parser.validate_train_opts = classmethod(_validate_train_opts_usability)
_Parser.validate_translate_opts = classmethod(_validate_translate_opts_usability)


# D1. Distributed — data parallelism (-world_size > 1), two things the stock path lacks.
#     - Overlap: Trainer._gradient_accumulation all-reduces every gradient after the last
#       backward (onmt.utils.distributed.all_reduce_and_rescale_tensors, reached through
#       the module at call time). For Mirror with -mirror_overlap_allreduce on,
#       build_trainer gives the Trainer an OverlappedAllReduce (onmt_mirror/distributed.py)
#       whose hooks launch bucket all-reduces during the backward; _gradient_accumulation
#       runs inside its step(), and the stock all-reduce call becomes its finish() with
#       the stock rescale_denom, at the same place before optim.step(): same sums, same
#       rescaling. train_single imported build_trainer by name: that name is replaced
#       too. Stock models, "off" and one process run the stock code untouched.
#     - Resume: only rank 0 writes the checkpoint, so R6 saved rank 0's generators and
#       -train_from gave them to every rank: ranks > 0 then drew other z samples and
#       dropout masks than an uninterrupted run. ModelSaver.save runs on every rank (its
#       _save gathers the weights), so there the ranks' generator states are gathered
#       into the optimizer state, and Optimizer.from_opt hands each rank its own (the
#       -mirror_keep_best checkpoint, written by rank 0 alone, keeps rank 0's only).
import onmt.utils.distributed  # noqa: E402
from onmt.models.model_saver import ModelSaverBase  # noqa: E402

from onmt_mirror.distributed import (  # noqa: E402
    OverlappedAllReduce,
    backward_passes,
    gather_rng_states,
)

_distributed_validate_train_opts = _Parser.validate_train_opts.__func__
_stock_build_trainer = onmt.trainer.build_trainer
_stock_gradient_accumulation = onmt.trainer.Trainer._gradient_accumulation
_stock_all_reduce_and_rescale = onmt.utils.distributed.all_reduce_and_rescale_tensors
_stock_saver_save = ModelSaverBase.save
_state_dict_before_ranks = _Optimizer.state_dict
_from_opt_before_ranks = _Optimizer.from_opt.__func__


def _validate_train_opts_distributed(cls, opt):
    if opt.mirror_allreduce_bucket_mb <= 0:
        raise MirrorError("-mirror_allreduce_bucket_mb %g: give a bucket size above 0 MB"
                          % opt.mirror_allreduce_bucket_mb)
    _distributed_validate_train_opts(cls, opt)


def _build_trainer(opt, device_id, model, vocabs, optim, model_saver=None):
    trainer = _stock_build_trainer(opt, device_id, model, vocabs, optim,
                                   model_saver=model_saver)
    if (isinstance(model, MirrorModel) and trainer.n_gpu > 1
            and trainer.parallel_mode == "data_parallel"
            and opt.mirror_overlap_allreduce == "on"):
        trainer.mirror_allreduce = OverlappedAllReduce(model.parameters(),
                                                       opt.mirror_allreduce_bucket_mb)
        logger.info("Mirror: gradients all-reduced during the backward in %d buckets of "
                    "<= %g MB (-mirror_overlap_allreduce on)",
                    len(trainer.mirror_allreduce.buckets), opt.mirror_allreduce_bucket_mb)
    return trainer


def _gradient_accumulation(self, true_batches, normalization, total_stats, report_stats):
    reducer = getattr(self, "mirror_allreduce", None)
    if reducer is None:
        return _stock_gradient_accumulation(self, true_batches, normalization,
                                            total_stats, report_stats)
    with reducer.step(backward_passes(true_batches, self.trunc_size)):
        return _stock_gradient_accumulation(self, true_batches, normalization,
                                            total_stats, report_stats)


def _all_reduce_and_rescale_tensors(tensors, rescale_denom, *args, **kwargs):
    reducer = OverlappedAllReduce.current
    if reducer is None:
        return _stock_all_reduce_and_rescale(tensors, rescale_denom, *args, **kwargs)
    reducer.finish(rescale_denom)


def _data_parallel():
    return torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def _saver_save(self, step, moving_average=None):
    if not _data_parallel():
        return _stock_saver_save(self, step, moving_average)
    self.optim.mirror_rank_rng = gather_rng_states()
    try:
        return _stock_saver_save(self, step, moving_average)
    finally:
        del self.optim.mirror_rank_rng


def _optim_state_dict_ranks(self):
    state = _state_dict_before_ranks(self)
    if getattr(self, "mirror_rank_rng", None) is not None:
        state["mirror_resume"]["rng_ranks"] = self.mirror_rank_rng
    return state


def _optim_from_opt_ranks(cls, model, opt, checkpoint=None):
    optim = _from_opt_before_ranks(cls, model, opt, checkpoint)
    saved = getattr(optim, "resume_from", None) or {}
    if "rng_ranks" in saved and _data_parallel():
        ranks, world = saved["rng_ranks"], torch.distributed.get_world_size()
        if len(ranks) == world:
            optim.resume_from = dict(saved, rng=ranks[torch.distributed.get_rank()])
        else:
            logger.info("-train_from a checkpoint of %d ranks on %d: every rank restores "
                        "rank 0's random generators", len(ranks), world)
    return optim


_Parser.validate_train_opts = classmethod(_validate_train_opts_distributed)
onmt.trainer.build_trainer = onmt.train_single.build_trainer = _build_trainer
onmt.trainer.Trainer._gradient_accumulation = _gradient_accumulation
onmt.utils.distributed.all_reduce_and_rescale_tensors = _all_reduce_and_rescale_tensors
ModelSaverBase.save = _saver_save
_Optimizer.state_dict = _optim_state_dict_ranks
_Optimizer.from_opt = classmethod(_optim_from_opt_ranks)
