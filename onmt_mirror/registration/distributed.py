"""Data parallelism (-world_size > 1): gradients all-reduced during the backward.

For Mirror with -mirror_overlap_allreduce on, the Trainer gets an OverlappedAllReduce
(onmt_mirror/distributed.py) whose hooks launch bucket all-reduces during the backward;
`_gradient_accumulation` runs inside its step(), and the stock all-reduce call becomes its
finish() with the stock rescale_denom, at the same place before optim.step(): same sums,
same rescaling. Stock models, "off" and one process run the stock code untouched. (Each
rank's random generators in checkpoints: checkpoints.py.)"""
import onmt.train_single
import onmt.trainer
import onmt.utils.distributed
from onmt.utils.logging import logger

from onmt_mirror.distributed import OverlappedAllReduce, backward_passes
from onmt_mirror.models.mirror import MirrorModel
from onmt_mirror.registration.patching import original, replaces

@replaces(onmt.train_single, "build_trainer", why="`train_single` imported it by name: the "
          "same replacement as `onmt.trainer.build_trainer`")
@replaces(onmt.trainer, "build_trainer", why="the stock Trainer all-reduces every gradient "
          "after the last backward; for Mirror with -mirror_overlap_allreduce on it gets an "
          "`OverlappedAllReduce` that overlaps them with the backward")
def build_trainer(opt, device_id, model, vocabs, optim, model_saver=None):
    trainer = original(onmt.trainer, "build_trainer")(opt, device_id, model, vocabs, optim,
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


@replaces(onmt.trainer.Trainer, "_gradient_accumulation", why="the overlapped all-reduce's "
          "hooks must know the backward passes of the step they belong to")
def gradient_accumulation(self, true_batches, normalization, total_stats, report_stats):
    stock = original(onmt.trainer.Trainer, "_gradient_accumulation")
    reducer = getattr(self, "mirror_allreduce", None)
    if reducer is None:
        return stock(self, true_batches, normalization, total_stats, report_stats)
    with reducer.step(backward_passes(true_batches, self.trunc_size)):
        return stock(self, true_batches, normalization, total_stats, report_stats)


@replaces(onmt.utils.distributed, "all_reduce_and_rescale_tensors", why="with the "
          "overlapped all-reduce the stock call (reached through the module) only waits "
          "for the buckets and rescales by the stock denominator")
def all_reduce_and_rescale_tensors(tensors, rescale_denom, *args, **kwargs):
    reducer = OverlappedAllReduce.current
    if reducer is None:
        return original(onmt.utils.distributed, "all_reduce_and_rescale_tensors")(
            tensors, rescale_denom, *args, **kwargs)
    reducer.finish(rescale_denom)
