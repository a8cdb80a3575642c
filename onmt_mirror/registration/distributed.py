"""Data parallelism (-world_size > 1): gradients all-reduced during the backward.

For Mirror with -mirror_overlap_allreduce on, the Trainer gets an OverlappedAllReduce
(onmt_mirror/distributed.py, set up in training.py) whose hooks launch bucket all-reduces
during the backward; `_gradient_accumulation` runs inside its step(), and the stock
all-reduce call becomes its finish() with the stock rescale_denom, at the same place
before optim.step(): same sums, same rescaling. Stock models, "off" and one process run the stock code untouched. (Each
rank's random generators in checkpoints: checkpoints.py.)"""
import onmt.utils.distributed

from onmt_mirror.distributed import OverlappedAllReduce
from onmt_mirror.registration.patching import original, replaces


@replaces(onmt.utils.distributed, "all_reduce_and_rescale_tensors", why="with the "
          "overlapped all-reduce the stock call (reached through the module) only waits "
          "for the buckets and rescales by the stock denominator")
def all_reduce_and_rescale_tensors(tensors, rescale_denom, *args, **kwargs):
    reducer = OverlappedAllReduce.current
    if reducer is None:
        return original(onmt.utils.distributed, "all_reduce_and_rescale_tensors")(
            tensors, rescale_denom, *args, **kwargs)
    reducer.finish(rescale_denom)
