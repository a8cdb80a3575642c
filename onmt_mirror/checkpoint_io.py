"""Checkpoint and output files that a crash cannot leave half-written, and safe loading.

OpenNMT-py 3.5.1 writes checkpoints with `torch.save` straight onto the final name and
opens `onmt_translate -output` (truncating it) before it even loads the model; a crash or
a bad checkpoint then leaves a truncated or empty file under the name the user trusts.
Here every such file is written to a temporary name in the same folder, flushed to disk
and moved over the final name with `os.replace` (atomic on POSIX and Windows). The
temporary file is created with the process's umask (as `open` would create the output);
a process killed mid-write leaves it behind, and the next write of that output removes it.

Loading uses `weights_only=True` explicitly (so even TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
cannot switch it off): a pickle that would import anything outside torch's allow-list
(plus argparse.Namespace, see registration/checkpoints.py) is refused with one line, never run.
"""
import os
import pickle
import re
import secrets
import zipfile

import torch

from onmt_mirror.errors import MirrorError, MissingFileError


_INCOMPLETE = "%s is not a complete checkpoint (truncated, or not written by torch.save)"


def _temp_beside(path):
    """An open temporary file `.<name>.<8 hex>.tmp` in the target's folder (os.replace must
    not cross disks), mode 0666 less the umask: tempfile.mkstemp's 0600 made every output
    unreadable to the rest of a group."""
    folder, name = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(folder, ".%s.%s.tmp" % (name, secrets.token_hex(4)))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        return os.fdopen(fd, "wb"), tmp


def remove_temporaries(folder, names):
    """Delete the files of `folder` whose whole name matches the regex `names`: what a
    process killed inside an atomic write left (at worst a checkpoint's size); -> names."""
    removed = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if re.fullmatch(names, name):
            try:
                os.remove(os.path.join(folder, name))
            except FileNotFoundError:  # another process of this run got there first
                continue
            removed.append(name)
    return removed


def temporaries_of(path):
    """remove_temporaries' arguments for the temporaries of one output (this module's
    names, and tempfile.mkstemp's of earlier versions)."""
    folder, name = os.path.split(os.path.abspath(path))
    return folder, r"\.%s\.\w{8}\.tmp" % re.escape(name)


def check_output(path, what):
    """Refuse an output path that cannot be written before any work is done: stock code
    found a directory or a missing folder only when it moved the finished file."""
    if os.path.isdir(path):
        raise MirrorError("%s %s is a directory: give a file name" % (what, path))
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise MissingFileError("%s %s: folder %s does not exist" % (what, path, folder))


def atomic_save(obj, path):
    """torch.save(obj, path), but `path` holds either its old content or all of obj;
    -> the names of earlier interrupted writes' temporaries it removed."""
    f, tmp = _temp_beside(path)
    try:
        with f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return remove_temporaries(*temporaries_of(path))


def safe_load(path, map_location=None):
    """torch.load with weights_only=True; a refused or broken file is a MirrorError.

    torch.save has written zip archives since torch 1.6, so a file that is not one (0
    bytes, a text file, a cut-off archive without its central directory) is refused before
    torch's legacy reader gets to fail on it (EOFError, KeyError, IndexError)."""
    if not os.path.isfile(path):
        raise MissingFileError("checkpoint not found: %s" % path)
    if not zipfile.is_zipfile(path):
        raise MirrorError(_INCOMPLETE % path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        raise MirrorError(
            "%s: refused to load: it pickles %s, which is not on the weights-only "
            "allow-list (loading it could run arbitrary code)"
            % (path, found.group(1) if found else "an object")) from None
    except RuntimeError as exc:
        if "PytorchStreamReader" not in str(exc) and "zip archive" not in str(exc):
            raise
        raise MirrorError(_INCOMPLETE % path) from None


class TorchCheckpointIO:
    """`torch` as onmt.models.model_saver sees it: save/load above, the rest unchanged."""

    save = staticmethod(atomic_save)

    @staticmethod
    def load(path, map_location=None, **kwargs):
        return safe_load(path, map_location)

    def __getattr__(self, name):
        return getattr(torch, name)


class AtomicTextOutput:
    """A text file for `onmt_translate -output`: created only when the translation
    finished (`commit`); until then lines go to a temporary file, `discard` drops it.
    Each translation call of an engine replaces the file as a whole."""

    def __init__(self, path):
        """Checks `path` now: stock OpenNMT-py found a bad one only after translating."""
        check_output(path, "-output")
        self.path = path
        self._file = self._tmp = None

    def write(self, text):
        if self._file is None:
            f, self._tmp = _temp_beside(self.path)
            f.close()
            self._file = open(self._tmp, "w", encoding="utf-8")
        self._file.write(text)

    def flush(self):
        if self._file is not None:
            self._file.flush()

    def commit(self):
        """Move the finished output over `path` (an empty translation: an empty file);
        -> the names of earlier interrupted writes' temporaries it removed."""
        if self._file is None:
            self.write("")
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        tmp, self._file, self._tmp = self._tmp, None, None
        try:
            os.replace(tmp, self.path)
        except OSError:  # e.g. -output became a directory meanwhile: leave no .tmp
            os.remove(tmp)
            raise
        return remove_temporaries(*temporaries_of(self.path))

    def discard(self):
        if self._file is not None:
            self._file.close()
            os.remove(self._tmp)
            self._file = self._tmp = None
