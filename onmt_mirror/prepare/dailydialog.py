"""DailyDialog reader (Li et al. 2017): one dialogue per line, turns ended by "__eou__".

The official split files are dialogues_{train,validation,test}.txt, either directly in the
input folder or in the train/, validation/, test/ folders the official zips unpack to.
"""
NAME = "dailydialog"
MAX_CONTEXT_TURNS = None  # a dialogue offers as many context turns as it has
UNIT = "dialogues"
SPLIT_FILES = {
    "train": ("dialogues_train.txt", "train/dialogues_train.txt"),
    "valid": ("dialogues_validation.txt", "validation/dialogues_validation.txt"),
    "test": ("dialogues_test.txt", "test/dialogues_test.txt"),
}
EOU = "__eou__"


def parse_line(text):
    """Return the dialogue's raw turns, or the reason the line is unusable."""
    if not text.strip():
        return None, "empty line"
    if EOU not in text:
        return None, f"no {EOU} separator"
    *turns, tail = text.split(EOU)
    if tail.strip():
        return None, f"does not end with {EOU} (truncated line?)"
    for i, turn in enumerate(turns, 1):
        if not turn.strip():
            return None, f"empty turn {i}"
    return turns, None
