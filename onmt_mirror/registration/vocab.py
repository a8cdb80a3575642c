"""Vocabulary files (-src_vocab, -tgt_vocab): a bad line is one error naming file and line.

OpenNMT-py 3.5.1's reader decodes the whole file at once and indexes the split lines, so
an empty file, a line without its count, a count that is not a number or a byte that is
not UTF-8 ended onmt_train in an IndexError, ValueError or UnicodeDecodeError naming
neither. Its format is kept: `token<whitespace>count` lines as onmt_build_vocab writes
them, or one token a line (then line 1 has no count); tokens with fewer than min_count
occurrences are left out.
"""
import onmt.inputters.inputter

from onmt_mirror.dialogue import NotUTF8, decode_lines
from onmt_mirror.errors import MirrorError
from onmt_mirror.registration.patching import replaces

FORMAT = "each line a token and its count, as onmt_build_vocab writes them"


@replaces(onmt.inputters.inputter, "_read_vocab_file", why="an empty vocabulary file, a "
          "line without its count, a count that is not a number or invalid UTF-8 was an "
          "IndexError/ValueError/UnicodeDecodeError naming neither file nor line")
def read_vocab_file(vocab_path, min_count):
    """The tokens of `vocab_path` with at least `min_count` occurrences, in file order
    (all of them when the file has no counts)."""
    tokens, counted = [], None
    for number, line in decode_lines(vocab_path):
        where = "vocabulary %s, line %d" % (vocab_path, number)
        if isinstance(line, NotUTF8):
            raise MirrorError("%s: invalid UTF-8 (byte 0x%02x at column %d)"
                              % (where, line.byte, line.column))
        fields = line.split(None, 1)
        if not fields:
            raise MirrorError("%s is empty (%s)" % (where, FORMAT))
        if counted is None:
            counted = len(fields) == 2
        if not counted:
            if len(fields) == 2:
                raise MirrorError("%s: %r has a count but line 1 has none (%s)"
                                  % (where, line, FORMAT))
            tokens.append(fields[0])
            continue
        if len(fields) == 1:
            raise MirrorError("%s: %r has no count (%s)" % (where, fields[0], FORMAT))
        if not fields[1].strip().isdecimal():
            raise MirrorError("%s: the count of %r is %r, not a whole number (%s)"
                              % (where, fields[0], fields[1].strip(), FORMAT))
        if int(fields[1]) >= min_count:
            tokens.append(fields[0])
    if counted is None:
        raise MirrorError("vocabulary %s is empty: build it with onmt_build_vocab"
                          % vocab_path)
    return tokens
