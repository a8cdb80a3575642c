"""CLI: `python -m onmt_mirror.prepare {dailydialog,movietriples} --input DIR --output DIR`.

Bad input ends the run with one line on stderr and exit status 1, never a traceback.
"""
import argparse
import sys

from onmt_mirror.errors import run_command

from . import dailydialog, movietriples
from .corpus import SPLITS, prepare

READERS = {reader.NAME: reader for reader in (dailydialog, movietriples)}


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m onmt_mirror.prepare",
        description="Write OpenNMT-ready {train,valid,test}.{src,tgt} and manifest.json "
        "from a raw dialogue dataset (see docs/data.md).",
    )
    parser.add_argument("dataset", choices=READERS)
    parser.add_argument("--input", required=True, help="folder with the split files")
    parser.add_argument("--output", required=True, help="folder for the corpus files")
    parser.add_argument("--context-turns", type=positive_int, default=1,
                        help="turns of history before the query in src (default 1: c only)")
    parser.add_argument("--lowercase", action="store_true")
    parser.add_argument("--dedup", action="store_true",
                        help="drop exact duplicate windows within each split")
    parser.add_argument("--on-bad-line", choices=("error", "skip"), default="error",
                        help="fail on the first unusable line (default) or skip and count them")
    return parser


def report(manifest, output, unit):
    for split in SPLITS:
        bad = manifest["bad_line_examples"][split]
        if bad:
            print(f"warning: skipped {manifest['skipped']['bad_lines'][split]} bad line(s) "
                  f"in {split}, first: {bad[0]}", file=sys.stderr)
    for split in SPLITS:
        print(f"{manifest['dataset']} {split}: {manifest[split]} windows from "
              f"{manifest[unit][split]} {unit} "
              f"({manifest['skipped']['short_dialogues'][split]} shorter than 3 turns, "
              f"{manifest['skipped']['bad_lines'][split]} bad lines skipped, "
              f"{manifest['duplicates'][split]} exact duplicate windows"
              f"{', removed' if manifest['options']['dedup'] else ''})")
    print(f"wrote {output}/{{train,valid,test}}.{{src,tgt}} and manifest.json")


def run(args):
    reader = READERS[args.dataset]
    manifest = prepare(reader, args.input, args.output, context_turns=args.context_turns,
                       lowercase=args.lowercase, dedup=args.dedup,
                       on_bad_line=args.on_bad_line)
    report(manifest, args.output, reader.UNIT)
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_command(f"onmt_mirror.prepare {args.dataset}", run, args)


if __name__ == "__main__":
    sys.exit(main())
