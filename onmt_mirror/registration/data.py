"""Data and batching: Mirror's transforms, the bucket sort, the data loaders' logs, and the
validation set read in the training process."""
import copy
import functools
import logging

import onmt.inputters.dynamic_iterator as dynamic_iterator
import onmt.train_single
import onmt.transforms
import torch
from onmt.constants import CorpusTask
from onmt.transforms.transform import Transform, TransformPipe

from onmt_mirror import resume
from onmt_mirror.registration.patching import declares, original, replaces
from onmt_mirror.transforms.mirror_backward import MirrorBackwardTransform
from onmt_mirror.transforms.mirror_triple import MirrorTripleTransform, triple_sort_key

declares(onmt.transforms, 'register_transform("mirror_triple")', why="the public registry; "
         "a transform's `add_options` is also the only way a plugin adds options to all "
         "three CLIs (so they are saved in checkpoints)")
if "mirror_triple" not in onmt.transforms.AVAILABLE_TRANSFORMS:
    onmt.transforms.register_transform("mirror_triple")(MirrorTripleTransform)

declares(onmt.transforms, 'register_transform("mirror_backward")',
         why="MMI's backward model p(x|y) reads the same triples with src and tgt turned")
if "mirror_backward" not in onmt.transforms.AVAILABLE_TRANSFORMS:
    onmt.transforms.register_transform("mirror_backward")(MirrorBackwardTransform)

replaces(dynamic_iterator, "text_sort_key", why="the bucket sort before batching has no "
         "option; the stock key (len(src) = c + x) let a batch's longest y set the steps of "
         "both y decoders. Triples sort by `triple_sort_key`, other lines by the stock key")(
    functools.partial(triple_sort_key, stock_key=dynamic_iterator.text_sort_key))


@replaces(TransformPipe, "stats", why="the stock pipe reports only ObservableStats; counts "
          "a transform keeps itself (mirror_triple's truncated and skipped lines) reach the "
          "log too")
def stats(self):
    own = ["\t\t\t* %s: %s" % (type(t).__name__, t.stats()) for t in self.transforms
           if type(t).stats is not Transform.stats and t.stats()]
    return "\n".join([m for m in [self.statistics.report()] if m] + own)


@replaces(dynamic_iterator, "init_logger", why="with -num_workers 0 WeightedMixer calls "
          "it (meant for a fresh data worker) in the main process, which dropped the "
          "-log_file handler; a configured logger is now kept")
def init_logger(*args, **kwargs):
    configured = logging.getLogger("onmt")
    if configured.handlers:
        return configured
    return original(dynamic_iterator, "init_logger")(*args, **kwargs)


@replaces(onmt.train_single, "build_dynamic_dataset_iter", why="with -num_workers N the "
          "validation iterator spawned N fresh worker processes for every validation, each "
          "importing torch, which took ten times the validation set's own reading "
          "(docs/performance.md); validation now reads in the training process")
def build_dynamic_dataset_iter(opt, transforms_cls, vocabs, task=CorpusTask.TRAIN, **kwargs):
    stock = original(onmt.train_single, "build_dynamic_dataset_iter")
    if task != CorpusTask.VALID or getattr(opt, "num_workers", 0) == 0:
        return stock(opt, transforms_cls, vocabs, task=task, **kwargs)
    opt = copy.copy(opt)
    opt.num_workers = 0
    batches = stock(opt, transforms_cls, vocabs, task=task, **kwargs)
    return None if batches is None else InProcessValidation(batches)


class InProcessValidation:
    """The validation batches read in the training process, which leaves the training's
    random generators (dropout, z) as the stock worker processes left them: each pass
    makes the one draw the stock DataLoader makes for its workers' base seed, and the
    host's generators are put back after each batch's reading (in a worker, a transform's
    draws came from the worker's own generators). Reading draws on the host only, so the
    CUDA generators are left alone: setting them re-seeds cuDNN's dropout state under
    the captured training graphs (resume.set_rng_state)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        torch.empty((), dtype=torch.int64).random_()
        batches = iter(self.batches)
        while True:
            state = resume.rng_state(cuda=False)
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                resume.set_rng_state(state)
            yield batch
