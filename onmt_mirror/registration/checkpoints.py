"""Checkpoints and resume: safe loading, atomic saving, leftovers of a killed save, and the
state that makes -train_from continue exactly where the run stopped."""
import argparse
import os
import re

import onmt.models.model_saver as model_saver
import onmt.train_single
import onmt.trainer
import onmt.utils.optimizers as optimizers
import torch
from onmt.utils.logging import logger

from onmt_mirror import resume
from onmt_mirror.checkpoint_io import BackgroundWriter, TorchCheckpointIO, remove_temporaries
from onmt_mirror.distributed import gather_rng_states
from onmt_mirror.errors import MirrorError
from onmt_mirror.losses.mirror_loss import MirrorLoss
from onmt_mirror.models.hred import HRED_ENCODER
from onmt_mirror.opts import MIRROR_ENCODER
from onmt_mirror.registration.patching import declares, original, replaces
from onmt_mirror.registration.training import host_batches

declares(torch.serialization, "add_safe_globals([argparse.Namespace])", why="torch >= 2.6 "
         "loads with `weights_only=True` and checkpoints hold the options as a Namespace; "
         "safe loading stays on")
torch.serialization.add_safe_globals([argparse.Namespace])

replaces(model_saver, "torch", why="ModelSaver and `load_checkpoint` (train and "
         "translate) reach torch through this name: a save onto the final name left a "
         "truncated file after a crash, a refused load was a long traceback")(
    TorchCheckpointIO())


def remove_stale_temporaries(save_model):
    """Delete the temporaries a killed atomic_save left for this -save_model; -> names."""
    folder, base = os.path.split(os.path.abspath(save_model))
    removed = remove_temporaries(
        folder, r"\.%s_(best_)?step_\d+\.pt\.\w+\.tmp" % re.escape(base))
    if removed:
        logger.info("Removed %d temporary file(s) left by an interrupted checkpoint save "
                    "in %s: %s", len(removed), folder, ", ".join(removed))
    return removed


@replaces(onmt.train_single, "build_model_saver", why="a process killed inside the atomic "
          "save leaves `.<name>_step_N.pt.XXXX.tmp` (a checkpoint's size); every run with "
          "that -save_model removes them first, with a log line; the saver's writes go to "
          "a background thread (-mirror_checkpoint_writer)")
def build_model_saver(model_opt, opt, model, vocabs, optim, device_id):
    if device_id <= 0:  # one process (CPU: -1, GPU rank 0) cleans up
        remove_stale_temporaries(opt.save_model)
    background = opt.mirror_checkpoint_writer == "background"
    model_saver.torch.writer = BackgroundWriter() if background else None
    return original(onmt.train_single, "build_model_saver")(model_opt, opt, model, vocabs,
                                                            optim, device_id)


@replaces(onmt.train_single, "_get_model_opts", why="-train_from takes the model's options "
          "from the checkpoint: a Mirror recipe resumed from a stock checkpoint trained and "
          "saved a stock model silently (the reverse failed later, on the vocabulary)")
def get_model_opts(opt, checkpoint=None):
    if checkpoint is not None:
        refuse_other_model_type(opt, checkpoint["opt"])
    return original(onmt.train_single, "_get_model_opts")(opt, checkpoint)


def refuse_other_model_type(opt, saved):
    """A checkpoint of another model than the recipe's, where the plugin builds either:
    stock pairs (say rnn and transformer) keep the stock rule, the checkpoint's model."""
    ours, theirs = opt.encoder_type, getattr(saved, "encoder_type", None)
    if ours != theirs and {ours, theirs} & {MIRROR_ENCODER, HRED_ENCODER}:
        raise MirrorError("-train_from %s holds a model of encoder_type %s, but this recipe "
                          "trains encoder_type %s: resume with the recipe that trained it, "
                          "or train without -train_from" % (opt.train_from, theirs, ours))


def data_parallel():
    return torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


@replaces(optimizers.Optimizer, "state_dict", why="exact resume: every checkpoint also "
          "carries the batches consumed, the random generators' states (each rank's "
          "with data parallelism) and, with fp16, the loss scaler's state")
def optimizer_state_dict(self):
    state = original(optimizers.Optimizer, "state_dict")(self)
    state["mirror_resume"] = {"batches": getattr(self, "batches_seen", 0),
                              "rng": resume.rng_state()}
    if getattr(self, "_scaler", None) is not None:
        state["mirror_resume"]["scaler"] = self._scaler.state_dict()
    if getattr(self, "mirror_rank_rng", None) is not None:
        state["mirror_resume"]["rng_ranks"] = self.mirror_rank_rng
    return state


@replaces(optimizers.Optimizer, "from_opt", why="-train_from restored weights, optimizer "
          "and step but restarted the data, re-seeded the generators and the fp16 loss "
          "scale; with the same corpora the optimizer now carries where to resume (each "
          "rank its own generators)")
def optimizer_from_opt(cls, model, opt, checkpoint=None):
    optim = original(optimizers.Optimizer, "from_opt")(cls, model, opt, checkpoint)
    saved = (checkpoint or {}).get("optim")
    if isinstance(saved, dict) and "mirror_resume" in saved and optim.training_step > 1:
        restore_scaler(optim, saved["mirror_resume"])
        if getattr(checkpoint["opt"], "data", None) == getattr(opt, "data", None):
            optim.resume_from = this_rank(saved["mirror_resume"])
        else:
            logger.info("-train_from with other corpora than the checkpoint's: the "
                        "training data starts at its first batch")
    return optim


def restore_scaler(optim, resume_from):
    """The loss scale and its growth counter as saved: a fresh GradScaler starts at 65,536,
    so a resumed fp16 run would skip or scale steps unlike an uninterrupted one."""
    if resume_from.get("scaler") and getattr(optim, "_scaler", None) is not None:
        optim._scaler.load_state_dict(resume_from["scaler"])


def this_rank(resume_from):
    """This rank's generator states (the -mirror_keep_best checkpoint, written by rank 0
    alone, keeps rank 0's only)."""
    if "rng_ranks" not in resume_from or not data_parallel():
        return resume_from
    ranks, world = resume_from["rng_ranks"], torch.distributed.get_world_size()
    if len(ranks) == world:
        return dict(resume_from, rng=ranks[torch.distributed.get_rank()])
    logger.info("-train_from a checkpoint of %d ranks on %d: every rank restores "
                "rank 0's random generators", len(ranks), world)
    return resume_from


@replaces(model_saver.ModelSaverBase, "save", why="only rank 0 writes the checkpoint, so "
          "with data parallelism every rank resumed with rank 0's generators; save runs on "
          "every rank, so their generator states are gathered there")
def model_saver_save(self, step, moving_average=None):
    stock = original(model_saver.ModelSaverBase, "save")
    if not data_parallel():
        return stock(self, step, moving_average)
    self.optim.mirror_rank_rng = gather_rng_states()
    try:
        return stock(self, step, moving_average)
    finally:
        del self.optim.mirror_rank_rng


@replaces(model_saver.ModelSaver, "_rm_checkpoint", why="-keep_checkpoint removed the "
          "oldest checkpoint as soon as the newest was saved: with a background write, "
          "only once the newest has landed")
def rm_checkpoint(self, name):
    model_saver.torch.remove(name)


@replaces(onmt.trainer.Trainer, "train", why="on resume, replay the data past the batches "
          "consumed and restore the generators (onmt_mirror/resume.py); Mirror's loss "
          "learns the step, for its error messages; the captured step reads its batches "
          "on the host (registration/training.py); training ends once its last "
          "checkpoint is written")
def trainer_train(self, train_iter, train_steps, *args, **kwargs):
    for loss in (self.train_loss, self.valid_loss):
        if isinstance(loss, MirrorLoss):
            loss.step_of = lambda: self.optim.training_step
    batches = resume.replay(host_batches(self, train_iter), self.optim, logger)
    try:
        return original(onmt.trainer.Trainer, "train")(self, batches, train_steps, *args,
                                                        **kwargs)
    finally:
        model_saver.torch.wait()
