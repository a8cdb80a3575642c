"""Shared pieces of the readers: turn normalisation, sliding windows, bad-line bookkeeping.

A window is one training example (src, tgt). src is the dialogue history, the context
turn(s) then the query x, joined with the separator (onmt_mirror/dialogue.py); tgt is
the response y. The plugin's transform splits src on that separator, so no turn may
contain it (readers split on it or reject the line).
"""
import hashlib
from dataclasses import dataclass, field

from onmt_mirror.dialogue import NotUTF8, decode_lines, join_turns


class BadLine:
    """One unusable input line, kept for the message (file and line) and the counts."""

    def __init__(self, path, lineno, reason):
        self.path, self.lineno, self.reason = path, lineno, reason

    def __str__(self):
        return f"{self.path} line {self.lineno}: {self.reason}"


@dataclass
class SplitData:
    """What a reader got from one split file."""

    windows: list = field(default_factory=list)  # (src, tgt) pairs, in file order
    records: int = 0  # usable dialogues (or triples) read
    short: int = 0  # dialogues with fewer than 3 turns: they give no window
    bad: list = field(default_factory=list)  # BadLine for each unusable line


def normalise(text, lowercase):
    """Single spaces between tokens: OpenNMT-py splits on spaces, and duplicates compare exactly."""
    text = " ".join(text.split())
    return text.lower() if lowercase else text


def sliding_windows(turns, context_turns):
    """Yield (src, tgt) for every response turn t >= 2 (c = t-2, x = t-1, y = t), stride 1.

    With context_turns K > 1, src holds up to K turns before the query; the earliest
    windows of a dialogue have fewer, so the set of (x, y) pairs, and the count, stay those
    of K = 1.
    """
    for t in range(2, len(turns)):
        history = turns[max(0, t - 1 - context_turns):t]
        yield join_turns(history), turns[t]


def read_split(path, parse_line, context_turns, lowercase):
    """Read one split file with a reader's parse_line(text) -> (raw turns, None) or (None, reason)."""
    data = SplitData()
    for lineno, text in decode_lines(path):
        if isinstance(text, NotUTF8):
            reason = f"not UTF-8 (byte 0x{text.byte:02x} at column {text.column})"
        else:
            turns, reason = parse_line(text)
        if reason:
            data.bad.append(BadLine(path, lineno, reason))
            continue
        turns = [normalise(turn, lowercase) for turn in turns]
        data.records += 1
        if len(turns) < 3:
            data.short += 1
        data.windows.extend(sliding_windows(turns, context_turns))
    return data


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
