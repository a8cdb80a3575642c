"""Shared pieces of the readers: turn normalisation, sliding windows, bad-line bookkeeping.

A window is one training example (src, tgt). src is the dialogue history, the context
turn(s) then the query x, joined with " __eou__ "; tgt is the response y. The plugin's
transform splits src on that separator, so no turn may contain it (readers split on it
or reject the line).
"""
import codecs
import hashlib
from dataclasses import dataclass, field

SEPARATOR = " __eou__ "


class PrepareError(Exception):
    """Input that cannot be prepared; the CLI prints it as one line and exits non-zero."""


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
        yield SEPARATOR.join(history), turns[t]


def decode_lines(path):
    """Yield (lineno, text or None, BadLine or None) for each line of a UTF-8 file.

    Decoding line by line (not the whole file) lets a bad byte be reported with its line.
    A byte-order mark (editors on Windows add one) is dropped, not glued to the first word.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            raw = raw.rstrip(b"\r\n")
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                yield lineno, raw.decode("utf-8"), None
            except UnicodeDecodeError as exc:
                byte = raw[exc.start]
                reason = f"not UTF-8 (byte 0x{byte:02x} at column {exc.start + 1})"
                yield lineno, None, BadLine(path, lineno, reason)


def read_split(path, parse_line, context_turns, lowercase):
    """Read one split file with a reader's parse_line(text) -> (raw turns, None) or (None, reason)."""
    data = SplitData()
    for lineno, text, bad in decode_lines(path):
        if bad is None:
            turns, reason = parse_line(text)
            if reason:
                bad = BadLine(path, lineno, reason)
        if bad is not None:
            data.bad.append(bad)
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
