"""Checkpoint and output files that a crash cannot leave half-written, and safe loading.

OpenNMT-py 3.5.1 writes checkpoints with `torch.save` straight onto the final name and
opens `onmt_translate -output` (truncating it) before it even loads the model; a crash or
a bad checkpoint then leaves a truncated or empty file under the name the user trusts.
Here every such file is written to a temporary name in the same folder, flushed to disk
and moved over the final name with `os.replace` (atomic on POSIX and Windows). The
temporary file is created with the process's umask (as `open` would create the output);
a process killed mid-write leaves it behind, and the next write of that output removes it.

During training a checkpoint can be written by a thread while training goes on
(BackgroundWriter), from a copy in host memory taken when it is saved.

Loading uses `weights_only=True` explicitly (so even TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1
cannot switch it off): a pickle that would import anything outside torch's allow-list
(plus argparse.Namespace, see registration/checkpoints.py) is refused with one line, never run.
"""
import os
import pickle
import re
import secrets
import shutil
import threading
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


def remove_if_there(path):
    if os.path.exists(path):
        os.remove(path)


def link_atomically(source, path):
    """`path` becomes a hard link to `source` (a copy where the disk has no links), all at
    once as atomic_save's files do."""
    f, tmp = _temp_beside(path)
    f.close()
    os.remove(tmp)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    except BaseException:
        remove_if_there(tmp)
        raise


def to_host(obj):
    """A copy of a checkpoint's nested dicts, lists and tuples whose tensors are copies in
    host memory, which training can no longer change."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return type(obj)((k, to_host(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_host(v) for v in obj)
    return obj


class BackgroundWriter:
    """Checkpoints written while training goes on: `save` copies the checkpoint to host
    memory (a GPU's one wait) and a thread writes it with atomic_save. One write at a
    time: the next save and `wait` (the end of training) wait for it and raise its error.
    What must follow a write (removing the checkpoint it replaces) is queued behind it
    with `after_write` and dropped if the write fails, so a crash or a full disk never
    leaves fewer complete checkpoints than the stock saver would."""

    def __init__(self):
        self.thread, self.error, self.queued = None, None, []
        self.lock, self.writing = threading.Lock(), False

    def save(self, obj, path):
        self.wait()
        snapshot = to_host(obj)
        self.writing = True
        self.thread = threading.Thread(target=self._write, args=(snapshot, path),
                                       name="checkpoint writer")
        self.thread.start()

    def _write(self, snapshot, path):
        try:
            atomic_save(snapshot, path)
        except BaseException as exc:  # raised in the training thread by wait()
            self.error = exc
        with self.lock:
            self.writing = False
            queued, self.queued = self.queued, []
        try:
            for fn, args in queued if self.error is None else ():
                fn(*args)
        except BaseException as exc:
            self.error = exc

    def after_write(self, fn, *args):
        """fn(*args) once the write in flight has landed; now if none is in flight."""
        with self.lock:
            if self.writing:
                self.queued.append((fn, args))
                return
        fn(*args)

    def wait(self):
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        error, self.error = self.error, None
        if error is not None:
            raise error


class TorchCheckpointIO:
    """`torch` as onmt.models.model_saver sees it: save/load above, the rest unchanged.
    With `writer` set (a BackgroundWriter), saves are written in the background."""

    writer = None

    def __init__(self):
        self.same_as = {}

    def save(self, obj, path):
        source = self.same_as.pop(os.path.abspath(path), None)
        if source is not None:
            return self.after_write(link_atomically, source, path)
        if self.writer is None:
            return atomic_save(obj, path)
        return self.writer.save(obj, path)

    def link_next_save(self, path, source):
        """The next save to `path` will hold what `source` holds (-mirror_keep_best's copy
        of the step just validated, which the trainer saves right after): a hard link
        to it instead of a second write of the same gigabytes."""
        self.same_as[os.path.abspath(path)] = source

    def after_write(self, fn, *args):
        if self.writer is None:
            return fn(*args)
        self.writer.after_write(fn, *args)

    def remove(self, path):
        """Delete a checkpoint that a newer one replaces, once the newer one is written."""
        self.after_write(remove_if_there, path)

    def wait(self):
        """Return once every checkpoint saved so far is written (its error raised)."""
        if self.writer is not None:
            self.writer.wait()

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
