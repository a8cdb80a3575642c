"""Reading the parallel text files every evaluator takes (src, ref and one file per system).

Evaluating misaligned files gives plausible-looking but meaningless numbers, so line
counts must agree exactly, and bad input is reported as one line naming the file (and
the line), never as a traceback.
"""
import sys

EOU = "__eou__"  # turn separator in src lines: earlier turns are the context c, the last the query x


class InputError(Exception):
    """Bad user input: the CLIs print it as one line and exit with status 2."""


def read_lines(path):
    """Lines of a UTF-8 file without their line ends; names file and line on bad bytes."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InputError("cannot read %s: %s" % (path, exc.strerror or exc)) from None
    lines = data.split(b"\n")
    if lines[-1] == b"":  # a final newline ends the last line, it does not start a new one
        lines.pop()
    out = []
    for number, raw in enumerate(lines, 1):
        try:
            out.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as exc:
            raise InputError(
                "%s line %d: invalid UTF-8 (byte 0x%02x at column %d)"
                % (path, number, raw[exc.start], exc.start + 1)
            ) from None
    return out


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


def split_src(line):
    """A src line -> (context turns, query): the last ` __eou__ `-separated turn is the query."""
    turns = [t.strip() for t in line.split(EOU)]
    return turns[:-1], turns[-1]


def progress(iterable=None, **kwargs):
    """A tqdm bar on stderr for an evaluator's long loop. Shown on a terminal only
    (disable=None), so logs, pipes and the printed tables stay clean."""
    from tqdm import tqdm

    return tqdm(iterable, disable=None, dynamic_ncols=True, **kwargs)


def run_cli(main, argv=None):
    """Run `main(argv)`; turn InputError into one line on stderr and exit status 2."""
    try:
        return main(argv)
    except InputError as exc:
        sys.stderr.write("error: %s\n" % exc)
        return 2
