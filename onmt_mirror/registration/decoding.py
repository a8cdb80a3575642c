"""Decoding: Mirror checkpoints for onmt_translate, K latent samples (-mirror_num_z,
re-ranking), DC's beam scorer (-dc_model), and an -output that only a finished run replaces.

Without -mirror_num_z > 1, the re-ranking options and -dc_model, the stock beam search runs
untouched."""
import itertools
import os

import onmt.inference_engine
import onmt.model_builder
import onmt.translate.beam_search
import onmt.translate.translator
import torch
from onmt.translate.beam_search import BeamSearch
from onmt.utils.logging import logger

from onmt_mirror.chat.text import unknown_shares
from onmt_mirror.checkpoint_io import AtomicTextOutput
from onmt_mirror.data_check import check_pair
from onmt_mirror.dialogue import SEPARATOR
from onmt_mirror.dc.scorer import dc_scorer_from_opt
from onmt_mirror.errors import MirrorError
from onmt_mirror.models.mirror import MirrorModel
from onmt_mirror.registration.patching import original, replaces
from onmt_mirror.translate.captured_beam import BeamState, BeamStep
from onmt_mirror.translate.multi_z import MultiZ

Translator = onmt.translate.translator.Translator
BeamSearchBase = onmt.translate.beam_search.BeamSearchBase
INHERITED = ("mirror_context_turns", "mirror_max_context_tokens",
             "mirror_max_utterance_tokens")
UNKNOWN_WARNING_SHARE = 0.10  # the demo's tokenised test.src: 9.1%; typed: 28.7%
UNKNOWN_CHECK_LINES = 10000


@replaces(onmt.model_builder, "load_test_model", why="-mirror_z is a translate option while "
          "the model is built from the checkpoint's; -src needs `mirror_triple` even when "
          "not listed; a stock checkpoint with Mirror options is an error")
def load_test_model(opt, device_id=0, model_path=None):
    path = model_path or opt.models[0]
    vocabs, model, model_opt = original(onmt.model_builder, "load_test_model")(
        opt, device_id, model_path)
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
        opt.transforms = opt._all_transform = ["mirror_triple"] + transforms
        for name in INHERITED:
            setattr(opt, name, getattr(model_opt, name))
        check_pair("-src", opt.src, getattr(opt, "tgt", None), opt)
        logger.info("Mirror checkpoint: -transforms mirror_triple added for -src")
    return vocabs, model, model_opt


@replaces(Translator, "from_opt", why="the Translator gets DC's side models (-dc_model) "
          "and the K-sample decoder (-mirror_num_z, re-ranking), which then writes K x "
          "n_best lines per input (n_best with -mirror_rerank)")
def translator_from_opt(cls, model, vocabs, opt, model_opt, *args, **kwargs):
    """The stock output path writes `Translator.n_best` lines per input and the server
    splits its replies by `opt.n_best`: both become the K-sample decoder's count."""
    translator = original(Translator, "from_opt")(cls, model, vocabs, opt, model_opt, *args,
                                                  **kwargs)
    translator.dc_scorer = dc_scorer_from_opt(opt, vocabs, logger)
    translator.beam_step = beam_step_from_opt(model, opt, translator)
    # a server reloading a model builds it again from the same opt, n_best set below
    beam_n_best = getattr(opt, "mirror_beam_n_best", opt.n_best)
    translator.multi_z = MultiZ.from_opt(model, vocabs, opt, model_opt, beam_n_best)
    if translator.multi_z is not None:
        opt.mirror_beam_n_best = beam_n_best
        translator.n_best = opt.n_best = translator.multi_z.lines_per_input
    return translator


def beam_step_from_opt(model, opt, translator):
    """Dec1's captured beam step where Mirror runs plain beam search on a GPU; else None,
    and the log says why."""
    if not isinstance(model, MirrorModel):
        return None
    reason = captured_beam_reason(opt, model, translator)
    if reason:
        logger.info("Mirror beam search: the stock step (%s)", reason)
        return None
    logger.info("Mirror beam search: Dec1's step replayed from CUDA graphs, one per shape "
                "(-mirror_captured_beam auto)")
    return BeamStep(model, translator.beam_size, translator._tgt_eos_idx,
                    translator._tgt_unk_idx, translator.ban_unk_token)


def captured_beam_reason(opt, model, translator):
    """What keeps the stock beam step ("" when nothing does)."""
    reasons = [
        (getattr(opt, "mirror_captured_beam", "auto") == "off", "-mirror_captured_beam off"),
        (not next(model.parameters()).is_cuda, "not on a GPU"),
        (model.dec_y_cxz.input_feed, "-input_feed 1"),
        (translator.sample_from_topk or translator.sample_from_topp, "random sampling"),
        (translator.block_ngram_repeat > 0, "-block_ngram_repeat"),
        (translator.global_scorer.has_cov_pen, "a coverage penalty"),
        (translator.replace_unk, "-replace_unk"),
        (translator.tgt_file_prefix, "-tgt_file_prefix"),
        (translator.dc_scorer is not None, "-dc_model")]
    return ", ".join(why for cond, why in reasons if cond)


@replaces(Translator, "_report_score", why="with -mirror_rerank a prediction's score is "
          "the re-rank score(y), not a log-probability of y: the stock line turned it into a "
          "PRED PPL of 1.4e22")
def report_score(self, name, score_total, nb_sentences):
    multi_z = getattr(self, "multi_z", None)
    if name != "PRED" or multi_z is None or not multi_z.rerank or not nb_sentences:
        return original(Translator, "_report_score")(self, name, score_total, nb_sentences)
    return ("PRED SCORE: %.4f (-mirror_rerank's score(y), not a log-probability: no PPL) "
            "NB SENTENCES: %d" % (score_total / nb_sentences, nb_sentences))


@replaces(Translator, "translate_batch", why="beam search keeps one beam per batch row and "
          "knows no latent: K samples decode the batch tiled K times (a z per row) and join "
          "or re-rank each input's K n-best lists (onmt_mirror/translate/multi_z.py)")
def translate_batch(self, batch, attn_debug):
    stock = original(Translator, "translate_batch")
    multi_z = getattr(self, "multi_z", None)
    if multi_z is None:
        return stock(self, batch, attn_debug)
    tiled = multi_z.tile(batch)
    self.n_best = multi_z.n_best  # what each beam keeps (BeamSearch reads it)
    try:
        results = stock(self, tiled, attn_debug)
    finally:
        self.n_best = multi_z.lines_per_input
    return multi_z.join(batch, tiled, results)


@replaces(Translator, "_translate_batch_with_strategy", why="DC (Baheti et al. 2018) needs "
          "a running state per beam search, started from the batch's source; Mirror's "
          "beam step replays from CUDA graphs in a loop of its own (captured_beam_search)")
def translate_batch_with_strategy(self, batch, decode_strategy):
    if getattr(self, "dc_scorer", None) is not None:
        decode_strategy.dc_state = self.dc_scorer.start(batch["src"][:, :, 0],
                                                        decode_strategy.beam_size)
    elif getattr(self, "beam_step", None) is not None and isinstance(
            decode_strategy, BeamSearch) and not decode_strategy.return_attention:
        return captured_beam_search(self, batch, decode_strategy, self.beam_step)
    return original(Translator, "_translate_batch_with_strategy")(self, batch,
                                                                  decode_strategy)


def captured_beam_search(self, batch, beam, beam_step):
    """The stock `_translate_batch_with_strategy` for Mirror, its step from `beam_step`
    (translate/captured_beam.py), which also does the stock `advance`'s tensor work and
    the state's reordering; here the rest of `advance`, as the stock code does it."""
    batch_size = len(batch["srclen"])
    src, enc_final_hs, enc_out, src_len = self._run_encoder(batch)
    decoder = self.model.decoder
    decoder.init_state(src, enc_out, enc_final_hs)
    gold_score, gold_log_probs = self._gold_score(batch, enc_out, src_len, False,
                                                  enc_final_hs, batch_size, src)
    fn_map_state, enc_out, _ = beam.initialize(enc_out, src_len)
    decoder.map_state(fn_map_state)
    h, c = decoder.state["hidden"]
    state = BeamState(beam.current_predictions, h, c, decoder.state["z"], enc_out,
                      decoder.state["mask"], beam.topk_log_probs.view(-1))
    scorer = beam.global_scorer
    for _ in range(beam.max_length):
        step = len(beam)
        result, state = beam_step.step(state, step <= beam.min_length)
        penalty = scorer.length_penalty(step + 1, alpha=scorer.alpha)
        beam.topk_scores = result.top / penalty if penalty != 1 else result.top
        beam.topk_log_probs = beam.topk_scores * penalty
        beam.topk_ids, beam._batch_index = result.ids, result.batch_index
        beam.select_indices = result.batch_index.view(-1)
        beam.alive_seq = torch.cat([beam.alive_seq[beam.select_indices],
                                    result.ids.view(-1, 1)], -1)
        beam.is_finished_list = result.ids.eq(beam.eos).tolist()
        beam.ensure_max_length()
        if any(any(row) for row in beam.is_finished_list):
            beam.update_finished()
            if beam.done:
                break
            rows = beam.select_indices  # the unfinished inputs', as before the reordering
            state = BeamState(beam.current_predictions, result.h[:, rows], result.c[:, rows],
                              state.z[rows], state.memory[rows], state.mask[rows],
                              beam.topk_log_probs.view(-1))
        else:
            state = state._replace(log_probs=beam.topk_log_probs.view(-1))
    return self.report_results(gold_score, gold_log_probs, batch, batch_size, beam)


@replaces(BeamSearchBase, "advance", why="the stock beam search has no per-step scorer "
          "hook: DC adds α·Δsim_topic + β·Δsim_SIF to every candidate's log-prob (batched "
          "over the vocabulary, onmt_mirror/dc/scorer.py)")
def advance(self, log_probs, attn):
    stock = original(BeamSearchBase, "advance")
    state = getattr(self, "dc_state", None)
    if state is None:
        return stock(self, log_probs, attn)
    log_probs += state.bonus().to(log_probs.dtype)
    stock(self, log_probs, attn)
    state.advance(self.select_indices, self.topk_ids.view(-1))


@replaces(BeamSearchBase, "remove_finished_batches", why="DC's state must drop the "
          "finished inputs with the beam")
def remove_finished_batches(self, _B_new, _B_old, non_finished, *args):
    original(BeamSearchBase, "remove_finished_batches")(self, _B_new, _B_old, non_finished,
                                                        *args)
    if getattr(self, "dc_state", None) is not None:
        self.dc_state.keep_batches(non_finished)


@replaces(onmt.translate.translator, "build_translator", why="it opened (truncated) -output "
          "before loading the model, so a failing onmt_translate left an empty file; and a "
          "-src mostly of unknown words (untokenised) decoded as <unk> without a warning")
def build_translator(opt, device_id=0, report_score=True, logger=None, out_file=None):
    """The output goes to a temporary file that replaces -output when the engine finished
    (single process; multi-GPU inference keeps the stock file)."""
    if out_file is None and getattr(opt, "world_size", 1) <= 1:
        out_file = AtomicTextOutput(opt.output)
    translator = original(onmt.translate.translator, "build_translator")(
        opt, device_id, report_score, logger, out_file)
    if os.path.isfile(getattr(opt, "src", None) or ""):
        warn_unknown_source(opt, set(translator.vocabs["src"].ids_to_tokens))
    return translator


def warn_unknown_source(opt, vocabulary):
    with open(opt.src, encoding="utf-8", errors="replace") as f:
        lines = list(itertools.islice(f, UNKNOWN_CHECK_LINES))
    # -src is split as mirror_triple splits it: at this run's -mirror_turn_sep
    share, tokenised = unknown_shares(lines, vocabulary,
                                      getattr(opt, "mirror_turn_sep", SEPARATOR))
    if share > UNKNOWN_WARNING_SHARE:
        hint = (" (tokenised as the training data was, %.1f%%: see docs/server.md, "
                "\"Typed text\")" % (100 * tokenised) if tokenised < share / 2 else "")
        logger.warning("-src %s: %.1f%% of the tokens in its first %d lines are not in "
                       "the model's vocabulary and are read as <unk>; is it tokenised "
                       "like the training data?%s", opt.src, 100 * share, len(lines), hint)


@replaces(onmt.inference_engine.InferenceEnginePY, "_translate", why="the temporary "
          "-output of `build_translator` replaces the file only when translating returned; "
          "then the temporaries a killed run left beside it go")
def engine_translate(self, infer_iter):
    stock = original(onmt.inference_engine.InferenceEnginePY, "_translate")
    out = self.translator.out_file
    if not isinstance(out, AtomicTextOutput):
        return stock(self, infer_iter)
    try:
        result = stock(self, infer_iter)
    except BaseException:
        out.discard()
        raise
    removed = out.commit()
    if removed:
        logger.info("Removed %d temporary file(s) left by an interrupted onmt_translate "
                    "beside %s: %s", len(removed), out.path, ", ".join(removed))
    return result
