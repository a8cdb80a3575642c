"""The training step: for Mirror on one GPU, the captured step (onmt_mirror/training/) in
place of the stock `Trainer._gradient_accumulation`; with several GPUs the overlapped
all-reduce around the stock one (distributed.py). Stock models run the stock code."""
import onmt.train_single
import onmt.trainer
import torch
from onmt.inputters.dynamic_iterator import OnDeviceDatasetIter
from onmt.utils.logging import logger

from onmt_mirror.distributed import OverlappedAllReduce, backward_passes
from onmt_mirror.errors import MirrorError
from onmt_mirror.losses.mirror_loss import MirrorLoss
from onmt_mirror.models.mirror import MirrorModel
from onmt_mirror.opts import CAPTURED_STEP_AUTO_BATCH
from onmt_mirror.registration.patching import original, replaces
from onmt_mirror.training.buckets import bucket_batch
from onmt_mirror.training.captured_step import CapturedStep


@replaces(onmt.train_single, "build_trainer", why="`train_single` imported it by name: the "
          "same replacement as `onmt.trainer.build_trainer`")
@replaces(onmt.trainer, "build_trainer", why="only here are the training options and the "
          "built Trainer together: Mirror's Trainer gets its captured step "
          "(-mirror_captured_step) or, with several GPUs, an `OverlappedAllReduce` that "
          "overlaps the gradient all-reduce with the backward")
def build_trainer(opt, device_id, model, vocabs, optim, model_saver=None):
    trainer = original(onmt.trainer, "build_trainer")(opt, device_id, model, vocabs, optim,
                                                      model_saver=model_saver)
    cap_gpu_memory(opt.mirror_gpu_memory_gb, next(model.parameters()).device)
    if not isinstance(model, MirrorModel):
        return trainer
    if (trainer.n_gpu > 1 and trainer.parallel_mode == "data_parallel"
            and opt.mirror_overlap_allreduce == "on"):
        trainer.mirror_allreduce = OverlappedAllReduce(model.parameters(),
                                                       opt.mirror_allreduce_bucket_mb)
        logger.info("Mirror: gradients all-reduced during the backward in %d buckets of "
                    "<= %g MB (-mirror_overlap_allreduce on)",
                    len(trainer.mirror_allreduce.buckets), opt.mirror_allreduce_bucket_mb)
    why_not = eager_reason(opt, model, trainer)
    if why_not:
        if opt.mirror_captured_step != "off":
            logger.info("Mirror training step: eager (%s)", why_not)
        return trainer
    trainer.mirror_step = CapturedStep(model, trainer.train_loss.total,
                                       optim._optimizer, optim._scaler,
                                       optim._max_grad_norm, optim.amp, log=logger.info)
    logger.info("Mirror training step: replayed from CUDA graphs, one per length bucket "
                "(-mirror_captured_step %s)", opt.mirror_captured_step)
    return trainer


def cap_gpu_memory(gb, device):
    """-mirror_gpu_memory_gb: the caching allocator's limit on this process."""
    if not gb:
        return
    if device.type != "cuda":
        raise MirrorError("-mirror_gpu_memory_gb %g: this training runs on the CPU" % gb)
    total = torch.cuda.get_device_properties(device).total_memory
    if gb * 2**30 > total:
        raise MirrorError("-mirror_gpu_memory_gb %g: the GPU has %.1f GB"
                          % (gb, total / 2**30))
    torch.cuda.set_per_process_memory_fraction(gb * 2**30 / total, device)
    logger.info("GPU memory of this training capped at %g GB (-mirror_gpu_memory_gb)", gb)


def eager_reason(opt, model, trainer):
    """Why the captured step cannot (or, with auto, should not) run; "" when it can."""
    cfg, optim = model.cfg, trainer.optim
    reasons = [
        (opt.mirror_captured_step == "off", "-mirror_captured_step off"),
        (not next(model.parameters()).is_cuda, "not on a GPU"),
        (trainer.n_gpu > 1, "several GPUs"),
        (trainer.trunc_size > 0, "-truncated_decoder"),
        (cfg.input_feed, "-input_feed 1 steps the decoders one token at a time"),
        (cfg.bidirectional, "a bidirectional encoder needs packed sequences"),
        (cfg.context_encoder == "hierarchical", "the hierarchical context encoder"),
        (opt.optim != "adam" or optim._fp16 not in (None, "amp"),
         "-optim %s, -model_dtype %s" % (opt.optim, opt.model_dtype)),
        (opt.mirror_captured_step == "auto" and (
            opt.batch_type != "sents" or opt.batch_size > CAPTURED_STEP_AUTO_BATCH),
         "-mirror_captured_step auto takes batches of at most %d sentences"
         % CAPTURED_STEP_AUTO_BATCH)]
    return next((why for cond, why in reasons if cond), "")


@replaces(onmt.trainer.Trainer, "_gradient_accumulation", why="Mirror's captured step "
          "replaces the stock one (same loss, statistics, guards, clipping and scaling); "
          "the overlapped all-reduce's hooks must know the backward passes of a step")
def gradient_accumulation(self, true_batches, normalization, total_stats, report_stats):
    stock = original(onmt.trainer.Trainer, "_gradient_accumulation")
    step = getattr(self, "mirror_step", None)
    if step is not None:
        return captured_accumulation(self, step, true_batches, normalization, total_stats,
                                     report_stats)
    reducer = getattr(self, "mirror_allreduce", None)
    if reducer is None:
        return stock(self, true_batches, normalization, total_stats, report_stats)
    with reducer.step(backward_passes(true_batches, self.trunc_size)):
        return stock(self, true_batches, normalization, total_stats, report_stats)


def host_batches(trainer, train_iter):
    """The captured step's training batches as the data workers give them, pinned on the
    host: the step buckets them there and copies each once, into its graph's buffer.
    The stock iterator copied each to the GPU (waiting for the step before) and the
    bucketing copied it back (three more waits). Other steps keep the stock iterator."""
    if getattr(trainer, "mirror_step", None) and isinstance(train_iter, OnDeviceDatasetIter):
        return train_iter.data_iter
    return train_iter


def captured_accumulation(trainer, step, true_batches, normalization, total_stats,
                          report_stats):
    """The stock step's bookkeeping around CapturedStep: statistics per batch, the guards
    before the update, the learning rate and step counters of OpenNMT-py's Optimizer."""
    optim, skipped = trainer.optim, False
    for batch in true_batches:
        key, flat, counts = bucket_batch(batch, trainer.model.cfg, step.widths)
        terms = MirrorLoss.fetch(step.forward_backward(key, flat, normalization))
        n_src_words = counts.pop("n_src_words")
        terms.update(counts)
        stats = trainer.train_loss.statistics(terms)
        report_stats.n_src_words += n_src_words
        total_stats.n_src_words += n_src_words
        if stats is None:
            skipped = True
            continue
        total_stats.update(stats)
        report_stats.update(stats)
    if skipped:  # as the stock skip: no weight or optimizer state changes
        step.discard()
    else:
        step.update(optim.learning_rate())
    optim._decay_step += 1
    optim._training_step += 1
