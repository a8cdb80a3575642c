r"""A human-evaluation kit like the paper's MTurk study, and its aggregation into Table 1.

    python -m onmt_mirror.evaluate.human_kit make --src test.src \
        --hyp mirror=pred1.txt --hyp seq2seq=pred2.txt [--hyp ...] \
        --n 100 --seed 1 --annotators 3 --out kit/
    # send kit/annotator1.html ... to the annotators; each exports one JSON file
    python -m onmt_mirror.evaluate.human_kit aggregate --key kit/key.json \
        answers/*.json --json human.json [--markdown human.md] [--plot human.png]

`make` samples N test examples (seeded) and pairs the first system's response with each
other system's. Every annotator sees the same pairs, in their own random order and with
their own random A/B sides, so neither position nor order can favour one system; which
system is A is recorded only in key.json. A pair whose two responses are the same text is
not shown (annotators could only guess): it is kept in key.json as `identical` and counts
as a tie from every annotator. `aggregate` maps the choices back to systems and reports
wins / losses / ties over all judgements with a bootstrap interval over examples and
Fleiss' kappa over (win, loss, tie).
"""
import argparse
import hashlib
import json
import os
import random

import numpy as np

from onmt_mirror.dialogue import SEPARATOR
from onmt_mirror.errors import run_command

from . import table1
from .agreement import fleiss_kappa
from .human_page import render
from .inputs import InputError, parse_named, read_parallel, split_src


def identical(a, b):
    """Two responses an annotator could not tell apart (same words, spacing aside)."""
    return a.split() == b.split()


def make_kit(src_lines, hyps, n, seed, annotators, sep=SEPARATOR):
    """-> (key, {annotator: html}); hyps is {name: lines}, its first system is compared;
    sep splits a src line into the context and query shown."""
    names = list(hyps)
    rng = random.Random(seed)
    examples = sorted(rng.sample(range(len(src_lines)), min(n, len(src_lines))))
    items = []
    for other in names[1:]:
        for i in examples:
            items.append({"id": "q%04d" % len(items), "example": i, "system": names[0], "other": other})
            if identical(hyps[names[0]][i], hyps[other][i]):
                items[-1]["identical"] = True
    kit_id = hashlib.sha1(json.dumps([seed, items, [hyps[k] for k in names]]).encode()).hexdigest()[:10]
    key = {"kit": kit_id, "seed": seed, "systems": names, "items": items, "annotators": {}}
    pages = {}
    for annotator in annotators:
        own = random.Random("%s:%s" % (seed, annotator))  # str seeds are stable across runs
        order = shown_items(key)
        own.shuffle(order)
        sides, shown = {}, []
        for item in order:
            pair = [item["system"], item["other"]]
            own.shuffle(pair)
            sides[item["id"]] = {"A": pair[0], "B": pair[1]}
            context, query = split_src(src_lines[item["example"]], sep)
            shown.append({"id": item["id"], "context": context, "query": query,
                          "A": hyps[pair[0]][item["example"]], "B": hyps[pair[1]][item["example"]]})
        key["annotators"][annotator] = sides
        pages[annotator] = render(kit_id, annotator, shown)
    return key, pages


def shown_items(key):
    """The items annotators judge: all but the identical pairs."""
    return [item for item in key["items"] if not item.get("identical")]


def outcomes(key, exports):
    """{annotator: choices} -> {item id: {annotator: +1/-1/0 for the item's system}};
    an identical pair is a tie from every annotator."""
    result = {item["id"]: ({a: 0 for a in exports} if item.get("identical") else {})
              for item in key["items"]}
    system = {item["id"]: item["system"] for item in key["items"]}
    for annotator, choices in exports.items():
        for item_id, choice in choices.items():
            if choice == "tie":
                result[item_id][annotator] = 0
            else:
                chosen = key["annotators"][annotator][item_id][choice]
                result[item_id][annotator] = 1 if chosen == system[item_id] else -1
    return result


def aggregate(key, exports, reps=1000, seed=0):
    """Table 1 rows (with Fleiss' kappa) from every annotator's complete export."""
    judged = outcomes(key, exports)
    annotators = sorted(exports)
    rows = []
    for other in key["systems"][1:]:
        ids = [it["id"] for it in key["items"] if it["other"] == other]
        matrix = np.array([[judged[i][a] for a in annotators] for i in ids])  # [items, annotators]
        counts = np.stack([(matrix == v).sum(axis=1) for v in (1, -1, 0)], axis=1)
        kappa = fleiss_kappa(counts) if len(annotators) >= 2 else None
        rows.append(table1.table1_row(key["systems"][0], other, matrix, reps=reps, seed=seed,
                                      kappa=kappa, annotators=len(annotators)))
    return rows


def read_export(path, key):
    """One annotator's export -> (annotator, choices), checked against the kit's key."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        annotator, choices = data["annotator"], data["choices"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError("%s: not a kit export (%s)" % (path, exc)) from None
    if data.get("kit") != key["kit"]:
        raise InputError("%s: belongs to kit %s, not %s" % (path, data.get("kit"), key["kit"]))
    if annotator not in key["annotators"]:
        raise InputError("%s: unknown annotator %r" % (path, annotator))
    shown = shown_items(key)
    missing = [it["id"] for it in shown if choices.get(it["id"]) not in ("A", "B", "tie")]
    if missing:
        raise InputError("%s: %d of %d items unanswered (first: %s)"
                         % (path, len(missing), len(shown), missing[0]))
    return annotator, choices


def cmd_make(args):
    systems = parse_named(args.hyp)
    if len(systems) < 2:
        raise InputError("make needs at least two --hyp systems")
    files = dict({"src": args.src}, **{"hyp:" + name: path for name, path in systems})
    texts = read_parallel(files)
    hyps = {name: texts["hyp:" + name] for name, _ in systems}
    annotators = ["annotator%d" % (k + 1) for k in range(args.annotators)]
    key, pages = make_kit(texts["src"], hyps, args.n, args.seed, annotators, args.turn_sep)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "key.json"), "w", encoding="utf-8") as f:
        json.dump(key, f, indent=1)
    for annotator, page in pages.items():
        with open(os.path.join(args.out, annotator + ".html"), "w", encoding="utf-8") as f:
            f.write(page)
    skipped = len(key["items"]) - len(shown_items(key))
    print("kit %s: %d items x %d annotators -> %s/{%s}.html (keep key.json private)%s"
          % (key["kit"], len(key["items"]) - skipped, len(annotators), args.out,
             ",".join(annotators),
             "; %d identical pairs not shown, counted as ties" % skipped if skipped else ""))
    return 0


def cmd_aggregate(args):
    try:
        with open(args.key, encoding="utf-8") as f:
            key = json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError("%s: cannot read the kit key (%s)" % (args.key, exc)) from None
    exports = {}
    for path in args.exports:
        annotator, choices = read_export(path, key)
        if annotator in exports:
            raise InputError("%s: a second export from %s" % (path, annotator))
        exports[annotator] = choices
    rows = aggregate(key, exports, args.bootstrap, args.seed)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump({"kit": key["kit"], "rows": rows}, f, indent=2)
    table = table1.markdown(rows, extra=[("kappa", "Fleiss κ")])
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(table)
    if args.plot:
        from .plots import plot_pairwise

        plot_pairwise(rows, args.plot, title="Human judgements (%d annotators)" % len(exports))
    print(table, end="")
    return 0


def build_parser():
    p = argparse.ArgumentParser(prog="python -m onmt_mirror.evaluate.human_kit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="sample examples and write one HTML page per annotator")
    make.add_argument("--src", required=True, help="dialogue histories, turns joined by --turn-sep")
    make.add_argument("--turn-sep", default=SEPARATOR, help="turn separator in --src "
                      "(-mirror_turn_sep; default %(default)s)")
    make.add_argument("--hyp", action="append", required=True, metavar="NAME=FILE",
                      help="at least two; the first is compared with each of the others")
    make.add_argument("--n", type=int, default=100, help="examples to sample (default 100)")
    make.add_argument("--seed", type=int, default=1)
    make.add_argument("--annotators", type=int, default=3)
    make.add_argument("--out", required=True, help="folder for the pages and key.json")
    make.set_defaults(run=cmd_make)
    agg = sub.add_parser("aggregate", help="exported choices -> Table 1 with Fleiss' kappa")
    agg.add_argument("--key", required=True, help="the kit's key.json")
    agg.add_argument("exports", nargs="+", help="one exported JSON file per annotator")
    agg.add_argument("--bootstrap", type=int, default=1000)
    agg.add_argument("--seed", type=int, default=0)
    agg.add_argument("--json", required=True)
    agg.add_argument("--markdown")
    agg.add_argument("--plot")
    agg.set_defaults(run=cmd_aggregate)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(run_command("onmt_mirror.evaluate.human_kit", main))
