"""User-facing errors: bad input or a wrong checkpoint is one readable line, not a traceback."""
import sys

EXIT_STATUS = 1  # a MirrorError's exit status, in the stock CLIs and the `python -m` commands


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
    """Print MirrorError (also when re-raised from a data worker) as one line; exit 1
    (Python's status after an uncaught exception, which EXIT_STATUS matches)."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if isinstance(exc, MirrorError) or "MirrorError" in exc_type.__name__:
            sys.stderr.write("onmt_mirror: error: %s\n" % one_line(exc))
            return
        previous(exc_type, exc, tb)

    sys.excepthook = hook


def run_command(prog, run, *args):
    """Run one `python -m onmt_mirror.<cmd>` command: its result, or for a MirrorError or
    an OSError (a file it could not read or write) one line `prog: error: ...` on stderr
    and EXIT_STATUS."""
    try:
        return run(*args)
    except (MirrorError, OSError) as exc:
        sys.stderr.write("%s: error: %s\n" % (prog, one_line(exc)))
        return EXIT_STATUS
