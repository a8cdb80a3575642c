"""One pass over the corpora before anything starts: problems OpenNMT-py would hide.

OpenNMT-py 3.5.1 zips src and tgt (unequal line counts silently truncate), decodes UTF-8
inside data workers (a bad byte is a traceback from another process), and skips empty lines
with a per-line warning. For corpora that use `mirror_triple` we check all of that, and each
line's turn structure, up front, so the user gets one line naming the file and line.
"""
import os

from onmt_mirror.dialogue import NotUTF8, read_lines, split_line, turn_problem
from onmt_mirror.errors import MirrorError


def _lines(path, label):
    if not path or not os.path.isfile(path):
        raise MirrorError("%s: file not found: %s" % (label, path))
    try:
        yield from enumerate(read_lines(path), 1)
    except NotUTF8 as bad:
        raise MirrorError("%s, file %s, line %d: invalid UTF-8 (byte 0x%02x at offset %d)"
                          % (label, path, bad.line, bad.byte, bad.column - 1)) from None


def _turn_problem(line, sep):
    problem = turn_problem(split_line(line, sep), sep)
    return problem[1] if problem else None


def check_pair(label, src, tgt, opts):
    """Check one corpus: equal line counts, UTF-8, turns; returns {problem: count}."""
    sep, skip = opts.mirror_turn_sep, opts.mirror_bad_line == "skip"
    counts = {"lines": 0, "bad": 0}
    tgt_lines = _lines(tgt, label) if tgt else None
    for number, line in _lines(src, label):
        counts["lines"] = number
        problem = _turn_problem(line, sep)
        if tgt_lines is not None:
            got = next(tgt_lines, None)
            if got is None:
                raise MirrorError("%s: %s has more lines than %s (%d+ vs %d)"
                                  % (label, src, tgt, number, number - 1))
            if problem is None and not got[1].strip():
                problem = "empty response in %s" % tgt
        if problem:
            if not skip:
                raise MirrorError("%s, file %s, line %d: %s" % (label, src, number,
                                                               problem))
            counts["bad"] += 1
    if tgt_lines is not None:
        extra = sum(1 for _ in tgt_lines)
        if extra:
            raise MirrorError("%s: %s has %d lines but %s has %d" % (
                label, src, counts["lines"], tgt, counts["lines"] + extra))
    if counts["lines"] == 0:
        raise MirrorError("%s: %s is empty" % (label, src))
    return counts


def check_corpora(opts):
    """Every corpus that uses mirror_triple (training) or -src/-tgt (translation)."""
    from onmt.utils.logging import logger

    data = getattr(opts, "data", None) or {}
    pairs = [("corpus %r" % cid, c.get("path_src"), c.get("path_tgt"))
             for cid, c in data.items() if "mirror_triple" in (c.get("transforms") or [])]
    if not data and getattr(opts, "src", None):
        pairs.append(("-src", opts.src, getattr(opts, "tgt", None)))
    for label, src, tgt in pairs:
        counts = check_pair(label, src, tgt, opts)
        if counts["bad"]:
            logger.warning("%s: %d of %d lines will be skipped (one turn or an empty "
                           "turn; -mirror_bad_line skip)", label, counts["bad"],
                           counts["lines"])
