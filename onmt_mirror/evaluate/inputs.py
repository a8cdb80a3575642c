"""Reading the parallel text files every evaluator takes (src, ref and one file per system).

Evaluating misaligned files gives plausible-looking but meaningless numbers, so line
counts must agree exactly, and bad input is reported as one line naming the file (and
the line), never as a traceback.
"""
from onmt_mirror.dialogue import SEPARATOR, read_lines as read_utf8_lines, split_line
from onmt_mirror.errors import MirrorError


class InputError(MirrorError):
    """Bad evaluator input (files that disagree, a malformed --hyp): one line, status 1."""


def read_lines(path):
    """Lines of a UTF-8 file without their line ends; names file and line on bad bytes."""
    try:
        return list(read_utf8_lines(path))
    except OSError as exc:
        raise InputError("cannot read %s: %s" % (path, exc.strerror or exc)) from None


def parse_named(specs):
    """['mirror=pred1.txt', ...] -> [('mirror', 'pred1.txt'), ...]; names must be unique."""
    named = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise InputError("--hyp expects NAME=FILE, got %r" % spec)
        if name in dict(named):
            raise InputError("system name %r given twice" % name)
        named.append((name, path))
    return named


def read_parallel(files):
    """{label: path} -> {label: lines}, after checking that all files have the same length."""
    texts = {label: read_lines(path) for label, path in files.items()}
    counts = {label: len(lines) for label, lines in texts.items()}
    if len(set(counts.values())) > 1:
        raise InputError(
            "line counts differ: "
            + ", ".join("%s has %d lines" % (files[label], n) for label, n in counts.items())
        )
    return texts


def split_src(line, sep=SEPARATOR):
    """A src line -> (context turns, query), as strings: the last turn is the query."""
    turns = [" ".join(turn) for turn in split_line(line, sep)]
    return turns[:-1], turns[-1]


def progress(iterable=None, **kwargs):
    """A tqdm bar on stderr for an evaluator's long loop. Shown on a terminal only
    (disable=None), so logs, pipes and the printed tables stay clean."""
    from tqdm import tqdm

    return tqdm(iterable, disable=None, dynamic_ncols=True, **kwargs)

