"""How long OpenNMT-py's validation iterator takes alone: the corpus read, transformed
(mirror_triple), batched and numericalised, as onmt_train's Trainer.validate gets it once
per validation, with no model. docs/performance.md compares it with a validation's time.

    python bench/bench_valid_iter.py [--passes 3] [onmt_train options]

The options default to the DailyDialog recipe (examples/dailydialog/mirror.yaml, which reads
data/dailydialog and run/dailydialog/vocab.txt).
"""
import argparse
import time

import onmt  # noqa: F401  (loads the plugin through the .pth hook)
from onmt.constants import CorpusTask
from onmt.inputters.dynamic_iterator import build_dynamic_dataset_iter
from onmt.opts import train_opts
from onmt.train_single import _init_train
from onmt.utils.parse import ArgumentParser


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--passes", type=int, default=3)
    args, rest = p.parse_known_args()
    parser = ArgumentParser()
    train_opts(parser)
    opt = parser.parse_args(["-config", "examples/dailydialog/mirror.yaml", "-world_size",
                             "1", "-gpu_ranks"] + rest)
    ArgumentParser.validate_train_opts(opt)
    ArgumentParser.update_model_opts(opt)
    ArgumentParser.validate_model_opts(opt)
    _, vocabs, transforms_cls = _init_train(opt)
    valid_iter = build_dynamic_dataset_iter(opt, transforms_cls, vocabs,
                                            task=CorpusTask.VALID, copy=False)
    for i in range(args.passes):
        start, batches, examples = time.perf_counter(), 0, 0
        for batch in valid_iter:
            batches += 1
            examples += len(batch[0]["srclen"])
        print("pass %d: %d batches, %d examples, %.2f s (num_workers %d)" % (
            i, batches, examples, time.perf_counter() - start, opt.num_workers), flush=True)


if __name__ == "__main__":
    main()
