"""Loss and statistics: MirrorLoss for Mirror models, its per-term statistics, the
validation report, and the one-line errors of the training step."""
import sys
import traceback

import onmt.models.model_saver
import onmt.trainer
import onmt.utils
import onmt.utils.report_manager
from onmt.inputters.inputter import vocabs_to_dict
from onmt.utils.logging import logger

from onmt_mirror.errors import MirrorError
from onmt_mirror.losses.mirror_loss import MirrorLoss, MirrorStatistics
from onmt_mirror.models.mirror import MirrorModel
from onmt_mirror.registration.patching import original, replaces


@replaces(onmt.trainer, "LossCompute", why="`build_trainer` calls `LossCompute.from_opts` "
          "by that imported name (no registry): stock models get the stock loss, Mirror "
          "`MirrorLoss` (with -normalization sents and its numerical guards)")
class LossComputeFactory:
    """Stock LossCompute for stock models, MirrorLoss for Mirror."""

    @classmethod
    def from_opts(cls, opt, model, vocab, train=True):
        if not isinstance(model, MirrorModel):
            return original(onmt.trainer, "LossCompute").from_opts(opt, model, vocab, train)
        if opt.normalization != "sents":
            # build_trainer reads opt.normalization right after this call
            logger.info("Mirror normalises Eq. 6 per sentence: -normalization sents")
            opt.normalization = "sents"
        device = next(model.parameters()).device
        loss = MirrorLoss(model.cfg.decoders, model.cfg.backward_weight,
                          model.cfg.pad_id, model.cfg.bow_weight,
                          opt.mirror_select).to(device)
        set_guards(loss, opt, train)
        return loss


def set_guards(loss, opt, train):
    """The numerical guards' options: -mirror_nonfinite, the KL-collapse warning, and
    train/valid mode (a validation batch is never skipped). A skipped batch leaves no
    gradients, which torch's GradScaler.step rejects ("No inf checks were recorded"):
    with fp16 the scaler itself skips steps with inf/NaN gradients, so skip is refused."""
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


replaces(onmt.utils, "Statistics", why="the Trainer and ReportMgr create it by that name "
         "and the stock `update()` drops extra fields; `MirrorStatistics` is a superset "
         "that sums Mirror's per-term values")(MirrorStatistics)


@replaces(onmt.utils.report_manager.ReportMgr, "_report_step", why="the stock validation "
          "report logs only ppl/acc; Dec1's perplexity with z from the prior (what decoding "
          "sees) and the other decoders' would otherwise reach TensorBoard only")
def report_mgr_report_step(self, lr, patience, step, valid_stats=None, train_stats=None):
    original(onmt.utils.report_manager.ReportMgr, "_report_step")(
        self, lr, patience, step, valid_stats=valid_stats, train_stats=train_stats)
    summary = valid_stats.mirror_summary() if valid_stats is not None else None
    if summary:
        self.log("Mirror validation; %s", "; ".join("%s: %.4g" % kv
                                                  for kv in summary.items()))


@replaces(onmt.utils.report_manager.ReportMgrBase, "report_training", why="the stock "
          "trainer first logs at step -report_every (minutes on a CPU); step 1 is reported "
          "too, so a run shows at once that it trains and what its losses start at")
def report_training(self, step, num_steps, learning_rate, patience, report_stats,
                    multigpu=False):
    if step != 1 or self.report_every == 1:
        return original(onmt.utils.report_manager.ReportMgrBase, "report_training")(
            self, step, num_steps, learning_rate, patience, report_stats, multigpu)
    if multigpu:
        report_stats = onmt.utils.Statistics.all_gather_stats(report_stats)
    self._report_training(step, num_steps, learning_rate, patience, report_stats)
    return onmt.utils.Statistics()


@replaces(onmt.trainer.Trainer, "_report_step", why="after each validation: the KL-collapse "
          "warning on the validation KL (short runs see it), and with -mirror_keep_best the "
          "checkpoint of the best validation perplexity, which ModelSaver has no notion of")
def trainer_report_step(self, learning_rate, step, valid_stats=None, train_stats=None):
    """Runs on the validating rank only."""
    result = original(onmt.trainer.Trainer, "_report_step")(
        self, learning_rate, step, valid_stats=valid_stats, train_stats=train_stats)
    loss = self.valid_loss
    if isinstance(loss, MirrorLoss) and valid_stats is not None and valid_stats.n_words:
        loss.check_validation_kl(valid_stats.mirror_summary(), step)
        if getattr(loss, "keep_best", False) and self.model_saver is not None:
            keep_best(self, step, valid_stats.ppl())
    return result


def keep_best(trainer, step, ppl):
    """ModelSaver._save gathers over all ranks, so the best checkpoint is written here from
    this rank's (replicated) weights, in the stock layout, with model_saver's atomic save."""
    if ppl >= getattr(trainer, "mirror_best_ppl", float("inf")):
        return
    saver, io = trainer.model_saver, onmt.models.model_saver.torch
    state = trainer.model.state_dict()
    path = "%s_best_step_%d.pt" % (saver.base_path, step)
    io.save({
        "model": {k: v for k, v in state.items() if "generator" not in k},
        "generator": trainer.model.generator.state_dict(),
        "vocab": vocabs_to_dict(saver.vocabs), "opt": saver.model_opt,
        "optim": saver.optim.state_dict()}, path)
    if not trainer.n_gpu > 1:  # with data parallelism the regular one holds every rank's RNG
        io.link_next_save("%s_step_%d.pt" % (saver.base_path, step), path)
    previous = getattr(trainer, "mirror_best_path", None)
    if previous:
        io.remove(previous)
    trainer.mirror_best_ppl, trainer.mirror_best_path = ppl, path
    logger.info("Best validation perplexity so far (%.4g, -mirror_select %s): %s", ppl,
                trainer.valid_loss.select, path)


class TracebackExceptMirrorError:
    """The `traceback` module as onmt.trainer sees it, silent for MirrorError."""

    def __getattr__(self, name):
        return getattr(traceback, name)

    @staticmethod
    def print_exc(*args, **kwargs):
        if not isinstance(sys.exc_info()[1], MirrorError):
            traceback.print_exc(*args, **kwargs)


replaces(onmt.trainer, "traceback", why="`Trainer._gradient_accumulation` prints the "
         "traceback of any exception but CUDA OOM before re-raising it; a MirrorError (e.g. "
         "a non-finite loss) is meant to be one line")(TracebackExceptMirrorError())
