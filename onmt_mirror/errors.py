"""User-facing errors: bad input or a wrong checkpoint is one readable line, not a traceback."""
import sys


class MirrorError(ValueError):
    """An error the user can fix (bad corpus line, wrong option, wrong checkpoint kind).

    Subclasses ValueError so callers catching OpenNMT-py's own ValueErrors still work.
    """


class MissingFileError(MirrorError, FileNotFoundError):
    """A file the user named does not exist: one line like every MirrorError, and still an
    OSError for callers that caught stock OpenNMT-py's FileNotFoundError/IOError."""


def one_line(exc):
    """The last non-empty line of the message: errors re-raised from a DataLoader worker
    carry the worker's traceback text in front of the original message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def install_excepthook():
    """Print MirrorError (also when re-raised from a data worker) as one line; exit 1."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if isinstance(exc, MirrorError) or "MirrorError" in exc_type.__name__:
            sys.stderr.write("onmt_mirror: error: %s\n" % one_line(exc))
            return
        previous(exc_type, exc, tb)

    sys.excepthook = hook
