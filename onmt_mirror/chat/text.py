"""Typed text <-> the tokens of a prepared corpus, for every place a person reads or types.

The corpora are used as their authors tokenised them (`onmt_mirror.prepare` only collapses
spaces): DailyDialog splits punctuation off words ("tea ?", "yes , very much .") but keeps
"don't", "6:00" and "..." whole. So typed text goes through pyonmttok (OpenNMT's own
tokenizer, conservative mode: punctuation split off, "5.30" kept) with joiner marks, and
the pieces it split inside a word are joined back when the model's vocabulary has the
joined form ("don ' t" -> "don't" where the corpus wrote "don't", and left split where
it did not). Measured on the demo corpus (2,782 distinct turns): re-tokenising a turn
leaves it unchanged for 99.1% of the turns; the same turn typed with punctuation attached
("tea?") comes back as the corpus wrote it for 95.1%.

A reply is detokenised for display with Moses' detokenizer (sacremoses, English rules):
"yes , very much ." -> "yes, very much.".
"""
import pyonmttok
from sacremoses import MosesDetokenizer

from onmt_mirror.dialogue import split_turns

_TOKENIZER = pyonmttok.Tokenizer("conservative", joiner_annotate=True)
_DETOKENIZER = MosesDetokenizer(lang="en")


def _joined_runs(tokens):
    """pyonmttok tokens -> runs of surfaces that were one word in the text."""
    runs = []
    for i, tok in enumerate(tokens):
        if i and (tok.join_left or tokens[i - 1].join_right):
            runs[-1].append(tok.surface)
        else:
            runs.append([tok.surface])
    return runs


def tokenize(text, vocabulary=()):
    """Typed text -> space-separated tokens as the corpus has them (see the module doc).

    `vocabulary`: the tokens the model knows (a set); pieces of one typed word are joined
    when their concatenation is one of them, longest first.
    """
    out = []
    for run in _joined_runs(_TOKENIZER.tokenize(text, as_token_objects=True)):
        i = 0
        while i < len(run):
            j = next((j for j in range(len(run), i + 1, -1)
                      if "".join(run[i:j]) in vocabulary), i + 1)
            out.append("".join(run[i:j]))
            i = j
    return " ".join(out)


def detokenize(tokens):
    """Space-separated tokens (a reply, a corpus turn) -> text for a person to read."""
    return _DETOKENIZER.detokenize(tokens.split())


def unknown_tokens(tokens, vocabulary):
    """The tokens of a space-separated string that the vocabulary lacks, in order."""
    return [t for t in tokens.split() if t not in vocabulary]


def unknown_shares(lines, vocabulary, sep):
    """Dialogue-history lines -> (share of their tokens the vocabulary lacks, the same
    share once each turn is tokenised as the corpus was); turn separators not counted."""
    tokens = retokenised = unknown = unknown_after = 0
    for line in lines:
        for words in split_turns(line.split(), sep):
            tokens += len(words)
            unknown += len(unknown_tokens(" ".join(words), vocabulary))
            after = tokenize(" ".join(words), vocabulary)
            retokenised += len(after.split())
            unknown_after += len(unknown_tokens(after, vocabulary))
    return unknown / max(tokens, 1), unknown_after / max(retokenised, 1)
