"""From a reader to the corpus on disk: find the split files, apply the bad-line policy,
count (and optionally drop) duplicate windows, then write all files atomically.

Everything is read and checked before anything is written, and files are written to
temporary names and renamed at the end (manifest.json last), so a failed run leaves the
output folder as it was.
"""
import json
import os
from pathlib import Path

from onmt_mirror.errors import MirrorError

from .windows import read_split, sha256

SPLITS = ("train", "valid", "test")
EXAMPLES_KEPT = 5  # bad lines quoted per split in manifest.json


def find_split_file(input_dir, split, names):
    found = [input_dir / name for name in names if (input_dir / name).is_file()]
    if not found:
        raise MirrorError(f"{input_dir}: no {split} split file (expected {' or '.join(names)})")
    if len(found) > 1:
        raise MirrorError(f"{input_dir}: two {split} split files ({found[0].name}, {found[1].name})")
    if found[0].stat().st_size == 0:
        raise MirrorError(f"{found[0]}: empty {split} split file")
    return found[0]


def check_bad_lines(data, on_bad_line):
    """Fail on the first bad line with the total count, unless told to skip them."""
    bad = [b for split in SPLITS for b in data[split].bad]
    if bad and on_bad_line == "error":
        per_split = ", ".join(f"{s} {len(data[s].bad)}" for s in SPLITS if data[s].bad)
        raise MirrorError(
            f"{bad[0]}; {len(bad)} bad line(s) in total ({per_split}); "
            "fix the input or pass --on-bad-line skip"
        )


def unique_windows(windows):
    """Keep the first occurrence of each exact (src, tgt) window, in file order."""
    seen = set()
    return [w for w in windows if not (w in seen or seen.add(w))]


def write_files(output_dir, files):
    """Write {name: iterable of lines} to temporary names, then rename them all into place."""
    output_dir.mkdir(parents=True, exist_ok=True)
    temporary = []
    try:
        for name, lines in files.items():
            path = output_dir / f".{name}.tmp-{os.getpid()}"
            temporary.append((path, output_dir / name))
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                f.writelines(line + "\n" for line in lines)
        for path, final in temporary:
            os.replace(path, final)
    finally:
        for path, _ in temporary:
            path.unlink(missing_ok=True)


def prepare(reader, input_dir, output_dir, context_turns=1, lowercase=False, dedup=False,
            on_bad_line="error"):
    """Prepare one dataset; return the manifest that was written next to the corpus files."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise MirrorError(f"{input_dir}: input folder not found")
    if reader.MAX_CONTEXT_TURNS is not None and context_turns > reader.MAX_CONTEXT_TURNS:
        raise MirrorError(
            f"{reader.NAME} has {reader.MAX_CONTEXT_TURNS} context turn(s) per example; "
            f"--context-turns {context_turns} is not possible"
        )
    paths = {s: find_split_file(input_dir, s, reader.SPLIT_FILES[s]) for s in SPLITS}
    data = {s: read_split(paths[s], reader.parse_line, context_turns, lowercase) for s in SPLITS}
    check_bad_lines(data, on_bad_line)

    windows, duplicates = {}, {}
    for split in SPLITS:
        unique = unique_windows(data[split].windows)
        duplicates[split] = len(data[split].windows) - len(unique)
        windows[split] = unique if dedup else data[split].windows
        if not windows[split]:
            raise MirrorError(f"{paths[split]}: no windows (no {reader.UNIT} with 3 or more turns)")
    in_train = set(windows["train"])

    manifest = {
        "dataset": reader.NAME,
        **{s: len(windows[s]) for s in SPLITS},
        "skipped": {
            "short_dialogues": {s: data[s].short for s in SPLITS},
            "bad_lines": {s: len(data[s].bad) for s in SPLITS},
            "duplicates_removed": {s: duplicates[s] if dedup else 0 for s in SPLITS},
        },
        "duplicates": duplicates,
        "overlap_with_train": {s: sum(w in in_train for w in windows[s]) for s in SPLITS[1:]},
        reader.UNIT: {s: data[s].records for s in SPLITS},
        "bad_line_examples": {s: [str(b) for b in data[s].bad[:EXAMPLES_KEPT]] for s in SPLITS},
        "options": {
            "context_turns": context_turns,
            "lowercase": lowercase,
            "dedup": dedup,
            "on_bad_line": on_bad_line,
        },
        "sources": {
            s: {"file": paths[s].relative_to(input_dir).as_posix(), "sha256": sha256(paths[s])}
            for s in SPLITS
        },
        "format": {
            "windows": "3-turn sliding windows, stride 1: c = turn t-2, x = turn t-1, y = turn t",
            "src": "context turn(s) then the query, joined with ' __eou__ '",
            "tgt": "the response turn",
        },
    }
    files = {}
    for split in SPLITS:
        files[f"{split}.src"] = (src for src, _ in windows[split])
        files[f"{split}.tgt"] = (tgt for _, tgt in windows[split])
    files["manifest.json"] = [json.dumps(manifest, indent=2, ensure_ascii=False)]
    write_files(output_dir, files)
    return manifest
