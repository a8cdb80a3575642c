"""The dialogue-line format, in one place: every reader and writer of a history line uses it.

A src line is the dialogue history, its turns joined by a separator token (`__eou__`,
-mirror_turn_sep): the last turn is the query x, the turns before it the context c; the
tgt line is the response y. The mirror_triple transform rewrites the history as
`c ｟mirror_query｠ x`, with ｟mirror_turn｠ between context turns when it keeps several.
"""
import codecs

from onmt_mirror.errors import MirrorError

SEPARATOR = "__eou__"  # the default -mirror_turn_sep, what `onmt_mirror.prepare` writes
QUERY_TOKEN = "｟mirror_query｠"  # between context and query in the src field
TURN_TOKEN = "｟mirror_turn｠"  # between context turns (when more than one is kept)


def split_turns(tokens, sep=SEPARATOR):
    """Token list -> list of turns (token lists); empty tokens from double spaces dropped."""
    turns, turn = [], []
    for tok in tokens:
        if tok == sep:
            turns.append(turn)
            turn = []
        elif tok:
            turn.append(tok)
    turns.append(turn)
    return turns


def split_line(line, sep=SEPARATOR):
    """A src line -> its turns (token lists), tokenised as OpenNMT-py reads a line."""
    return split_turns(line.strip().split(" "), sep)


def join_turns(turns, sep=SEPARATOR):
    """Turns (strings) -> a src line."""
    return (" %s " % sep).join(turns)


def turn_problem(turns, sep=SEPARATOR):
    """Why a split history cannot be a triple, as (count key, message), or None. Shared by
    the transforms, the up-front corpus check and the chat so all name a bad line alike."""
    if len(turns) < 2:
        return "one_turn", ("only one turn, so no context and query: turns are separated "
                            "by %r" % sep)
    if any(not t for t in turns):
        return "empty_turn", "empty turn (turns are separated by %r)" % sep
    return None


class NotUTF8(MirrorError):
    """A line that is not UTF-8; keeps where (path, line, 1-based column) and the byte, for
    callers that name them in their own words."""

    def __init__(self, path, line, byte, column):
        super().__init__("%s line %d: invalid UTF-8 (byte 0x%02x at column %d)"
                         % (path, line, byte, column))
        self.path, self.line, self.byte, self.column = path, line, byte, column


def decode_lines(path):
    """Yield (line number, text or NotUTF8) for each line of a file, without line ends.

    Decoding line by line (not the whole file) lets a bad byte be reported with its line,
    and lets a caller that skips bad lines go on. A byte-order mark (editors on Windows
    add one) is dropped, not glued to the first word. OSError is the caller's to phrase.
    """
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            raw = raw.rstrip(b"\r\n")
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, NotUTF8(path, number, raw[exc.start], exc.start + 1)


def read_lines(path):
    """Yield the lines of a UTF-8 file without their line ends; NotUTF8 at a bad one."""
    for _, text in decode_lines(path):
        if isinstance(text, NotUTF8):
            raise text
        yield text
