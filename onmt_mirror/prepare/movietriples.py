"""MovieTriples reader (Serban et al. 2016): one triple per line, three tab-separated turns.

c = first, x = second, y = third. The files come from the authors (no public copy); the
HRED release names them {Training,Validation,Test}_Shuffled_Dataset.txt, and
train.txt / valid.txt / test.txt are accepted too.
"""
from onmt_mirror.dialogue import SEPARATOR

NAME = "movietriples"
MAX_CONTEXT_TURNS = 1  # a triple has exactly one turn before the query
UNIT = "triples"
SPLIT_FILES = {
    "train": ("Training_Shuffled_Dataset.txt", "train.txt"),
    "valid": ("Validation_Shuffled_Dataset.txt", "valid.txt"),
    "test": ("Test_Shuffled_Dataset.txt", "test.txt"),
}


def parse_line(text):
    """Return the three raw utterances, or the reason the line is unusable."""
    if not text.strip():
        return None, "empty line"
    turns = text.split("\t")
    if len(turns) != 3:
        return None, f"expected 3 tab-separated utterances, found {len(turns)}"
    for i, turn in enumerate(turns, 1):
        if not turn.strip():
            return None, f"empty utterance {i}"
        if SEPARATOR in turn:  # it would split the joined src in the wrong place
            return None, f"utterance {i} contains {SEPARATOR}"
    return turns, None
