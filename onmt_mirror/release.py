"""python -m onmt_mirror.release --model CKPT --output OUT [--dtype fp16|fp32]

A training checkpoint made into a file for decoding and chatting: the optimizer state goes
(Adam's two moments are twice the model), so do the bag-of-words heads and Dec2/Dec4
(training losses only: decoding runs Dec1, re-ranking Dec3, the IW bound Dec1), and the
weights are stored in fp16 unless --dtype fp32. The options saved with it say
-mirror_bow_weight 0 and name the decoders kept, so the model rebuilt from them has nothing
left to fill. Loading casts back to the decoding precision (onmt_translate -precision), so
the file works on CPU and GPU alike.

The stock `onmt_release_model` only drops the optimizer; this also works for non-Mirror
checkpoints (then it drops the optimizer and casts).
"""
import argparse
import os
import sys

import torch

from onmt_mirror.checkpoint_io import atomic_save, check_output, safe_load
from onmt_mirror.errors import MirrorError, run_command

DECODING = ("y_cxz", "x_cyz")  # Dec1 decodes; Dec3 re-ranks (translate/multi_z.py, rerank)


def release(checkpoint, dtype=torch.float16):
    """The checkpoint dict, released (a new dict; the input is not changed)."""
    opt = type(checkpoint["opt"])(**vars(checkpoint["opt"]))
    dropped = ("bow_",)
    if getattr(opt, "encoder_type", None) == "mirror":
        trained = opt.mirror_decoders.split(",")
        dropped += tuple("%s_%s." % (part, d) for d in trained if d not in DECODING
                         for part in ("dec", "emb", "readout"))
        opt.mirror_decoders = ",".join(d for d in trained if d in DECODING)
        opt.mirror_bow_weight = 0.0
    return dict(checkpoint, optim=None, opt=opt,
                model={k: _cast(v, dtype) for k, v in checkpoint["model"].items()
                       if not k.startswith(dropped)},
                generator={k: _cast(v, dtype) for k, v in checkpoint["generator"].items()})


def _cast(tensor, dtype):
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def run(args):
    import onmt  # noqa: F401  (registers the plugin: safe loading of the saved options)

    check_output(args.output, "--output")
    ckpt = safe_load(args.model, map_location="cpu")
    if not isinstance(ckpt, dict) or not {"model", "generator", "opt"} <= set(ckpt):
        raise MirrorError("%s is not an OpenNMT-py checkpoint (no model, generator and "
                          "opt entries)" % args.model)
    released = release(ckpt, torch.float16 if args.dtype == "fp16" else torch.float32)
    removed = atomic_save(released, args.output)
    mirror = getattr(released["opt"], "encoder_type", None) == "mirror"
    kept = released["opt"].mirror_decoders if mirror else None
    print("release: %s (%.1f MB) -> %s (%.1f MB, %s, no optimizer%s)" % (
        args.model, os.path.getsize(args.model) / 1e6, args.output,
        os.path.getsize(args.output) / 1e6, args.dtype,
        ", decoders %s, no bag-of-words heads" % kept if kept else ""))
    if removed:
        print("release: removed %d temporary file(s) left by an interrupted release: %s"
              % (len(removed), ", ".join(removed)))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m onmt_mirror.release", description="Make a training checkpoint "
        "into a smaller one for decoding and chatting: no optimizer state, no training-only "
        "heads and decoders, fp16 weights unless --dtype fp32.")
    parser.add_argument("--model", required=True, help="a checkpoint from onmt_train")
    parser.add_argument("--output", required=True, help="the released checkpoint")
    parser.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16")
    return run_command("onmt_mirror.release", run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
