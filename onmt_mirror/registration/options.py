"""Option checks: a bad option, path or machine is one line naming what to change, before
any data is read or anything written (stock OpenNMT-py failed late, with a traceback)."""
import importlib.util
import os

import onmt.utils.parse
import torch

from onmt_mirror.errors import MirrorError, MissingFileError
from onmt_mirror.opts import MIRROR_ENCODER, add_mirror_options
from onmt_mirror.registration.patching import original, replaces

ArgumentParser = onmt.utils.parse.ArgumentParser
DataOptsCheckerMixin = onmt.utils.parse.DataOptsCheckerMixin
MIRROR_ONLY_GROUPS = ("Model/Mirror", "Loss/Mirror", "Latent/Mirror", "Reliability/Mirror",
                      "Distributed/Mirror")


@replaces(ArgumentParser, "validate_train_opts", why="onmt_train (before anything is "
          "written): Mirror's options on a stock model, which would ignore them silently; "
          "a GPU recipe without CUDA; -tensorboard without the package")
def validate_train_opts(cls, opt):
    original(ArgumentParser, "validate_train_opts")(cls, opt)
    refuse_mirror_options_on_stock_models(opt)
    check_gpus(opt)
    if getattr(opt, "tensorboard", False) and importlib.util.find_spec("tensorboard") is None:
        raise MirrorError("-tensorboard needs the tensorboard package: pip install "
                          "'onmt-mirror[tb]' (or pip install tensorboard), or set "
                          "tensorboard: false")


@replaces(ArgumentParser, "validate_translate_opts", why="onmt_translate and onmt_server "
          "with -gpu on a machine without CUDA failed once the model loaded, with a "
          "traceback (\"Torch not compiled with CUDA enabled\"); -beam_size 0 and -n_best 0 "
          "were a RuntimeError and an IndexError, and -src a directory \"file not found\", "
          "after the model loaded")
def validate_translate_opts(cls, opt):
    original(ArgumentParser, "validate_translate_opts")(cls, opt)
    if os.path.isdir(opt.src):
        raise MirrorError("-src %s is a directory: give a file" % opt.src)
    for name in ("beam_size", "n_best"):
        if getattr(opt, name) < 1:
            raise MirrorError("-%s %d: give 1 or more" % (name, getattr(opt, name)))
    check_gpus(opt)


def mirror_only_defaults():
    parser = ArgumentParser()
    add_mirror_options(parser)
    return {a.dest: a.default for g in parser._action_groups
            if g.title in MIRROR_ONLY_GROUPS for a in g._group_actions}


def refuse_mirror_options_on_stock_models(opt):
    """Mirror's model, loss and guard options that differ from their defaults."""
    if getattr(opt, "encoder_type", None) == MIRROR_ENCODER or opt.train_from:
        return
    given = [k for k, v in mirror_only_defaults().items()
             if hasattr(opt, k) and getattr(opt, k) != v]
    if given:
        raise MirrorError("%s: Mirror option(s), but the model is encoder_type %r (use "
                          "-encoder_type %s, or drop them)"
                          % (", ".join("-" + k for k in given), opt.encoder_type,
                             MIRROR_ENCODER))


def cuda_found():
    """(number of CUDA devices, why there are none) for the error line."""
    if torch.version.cuda is None:
        return 0, "torch %s is built without CUDA" % torch.__version__
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return count, "torch sees %d CUDA device%s" % (count, "" if count == 1 else "s")


def check_gpus(opt):
    ranks = list(getattr(opt, "gpu_ranks", None) or [])
    gpu = getattr(opt, "gpu", -1)
    if not ranks and (gpu is None or gpu < 0):
        return
    count, found = cuda_found()
    if len(ranks) > count:
        raise MirrorError("-gpu_ranks %s needs %d CUDA GPU%s, but %s: to run on the CPU, "
                          "give -gpu_ranks with no value (and -world_size 1)"
                          % (" ".join(map(str, ranks)), len(ranks),
                             "" if len(ranks) == 1 else "s", found))
    if gpu is not None and gpu >= count:
        raise MirrorError("-gpu %d needs a CUDA GPU, but %s: to run on the CPU, use -gpu -1"
                          % (gpu, found))


@replaces(DataOptsCheckerMixin, "_validate_file", why="a missing corpus or vocabulary file "
          "was an OSError traceback; now one line with the path (still an OSError), which "
          "for a directory says so")
def validate_file(file_path, info):
    if os.path.isdir(file_path):
        raise MirrorError("%s file %s is a directory: give a file" % (info, file_path))
    if not os.path.isfile(file_path):
        hint = " (build it with onmt_build_vocab)" if info.endswith("vocab") else ""
        raise MissingFileError("%s file not found: %s%s" % (info, file_path, hint))


@replaces(DataOptsCheckerMixin, "_validate_vocab_opts", why="onmt_build_vocab counted the "
          "whole corpus before finding that -src_vocab/-tgt_vocab is a directory or exists "
          "without -overwrite (a traceback)")
def validate_vocab_opts(cls, opt, build_vocab_only=False):
    original(DataOptsCheckerMixin, "_validate_vocab_opts")(cls, opt, build_vocab_only)
    if not build_vocab_only:
        return
    for path in [opt.src_vocab] + ([] if opt.share_vocab else [opt.tgt_vocab]):
        if os.path.isdir(path):
            raise MirrorError("vocabulary output %s is a directory: give a file name"
                              % path)
        if os.path.exists(path) and not opt.overwrite:
            raise MirrorError("vocabulary output %s exists (add -overwrite to replace it)"
                              % path)
