"""n-best lists, the MMI-bidi score, re-ranking and the (λ, γ) grid search. No torch here.

MMI-bidi (Li et al., 2016, Eq. 5 with the length term of their Section 4.5): each
candidate response y of the forward model's n-best list for a source s = (c, x) is scored

    score(y) = log p(y | c, x) + λ · log p_back + γ · |y|

where log p_back is log p(x | y) from a separately trained backward model (MMI), or
Mirror's own Dec3 log p(x | c, z, y) with z from the prior mean (`dec3`), and |y| is the
number of tokens of y. The highest score wins; a tie keeps the forward model's order.

Malformed input (files, grids, the objective) raises MirrorError: the user's to fix.
"""
import csv
import math

from onmt_mirror.dialogue import read_lines
from onmt_mirror.errors import MirrorError

SCORE_FIELDS = ("src_id", "rank", "length", "fwd", "bwd", "candidate")


def read_nbest(path, n_src, n_best=None):
    """onmt_translate -n_best N output -> n_src lists of N (candidate, score or None).

    The file holds N lines per source, in source order. A line `text<TAB>score` (what
    -with_score writes once OpenNMT-py's bug #2583 is fixed) keeps its score.
    """
    lines = list(read_lines(path))
    if n_src <= 0 or not lines or len(lines) % n_src:
        raise MirrorError("%s: %d lines is not a multiple of the %d sources (one block of "
                          "-n_best lines per source)" % (path, len(lines), n_src))
    n = len(lines) // n_src
    if n_best is not None and n != n_best:
        raise MirrorError("%s: %d lines per source, expected -n_best %d"
                          % (path, n, n_best))
    rows = []
    for number, line in enumerate(lines, 1):
        text, _, score = line.partition("\t")
        rows.append((text.strip(), _number(float, score, "%s line %d" % (path, number))
                     if score else None))
    return [rows[i * n:(i + 1) * n] for i in range(n_src)]


class ScoreWriter:
    """The score cache: a TSV of SCORE_FIELDS with a header, rows appended in any order
    (read_scores groups and sorts them), so that onmt_translate can add each batch's."""

    def __init__(self, path):
        self.path = path
        self._append([SCORE_FIELDS], "w")

    def write(self, rows):
        """rows: dicts with SCORE_FIELDS."""
        self._append([[r["src_id"], r["rank"], r["length"], repr(float(r["fwd"])),
                       repr(float(r["bwd"])), r["candidate"]] for r in rows], "a")

    def _append(self, records, mode):
        with open(self.path, mode, encoding="utf-8", newline="") as f:
            csv.writer(f, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE,
                       escapechar="\\").writerows(records)


def write_scores(path, rows):
    """rows: dicts with SCORE_FIELDS -> a TSV with a header (the score cache)."""
    ScoreWriter(path).write(rows)


def _number(kind, text, where):
    """int or float of a field, or MirrorError naming where it is."""
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise MirrorError("%s: %r is not a number" % (where, text)) from None


def read_scores(path):
    """The TSV of write_scores -> list (per source, in order) of lists of row dicts."""
    groups = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        try:
            header = next(reader, None)
            if tuple(header or ()) != SCORE_FIELDS:
                raise MirrorError("%s: not a score file (header %s expected)"
                                  % (path, "\t".join(SCORE_FIELDS)))
            for rec in reader:
                r = dict(zip(SCORE_FIELDS, rec))
                where = "%s line %d" % (path, reader.line_num)
                r.update({k: _number(int, r.get(k), where)
                          for k in ("src_id", "rank", "length")})
                r.update({k: _number(float, r.get(k), where) for k in ("fwd", "bwd")})
                r["candidate"] = r.get("candidate") or ""
                groups.setdefault(r["src_id"], []).append(r)
        except UnicodeDecodeError as exc:
            raise MirrorError("%s: not a score file (invalid UTF-8: %s)"
                              % (path, exc)) from None
    ids = sorted(groups)
    if ids != list(range(len(ids))):
        raise MirrorError("%s: source ids are not 0..%d" % (path, len(ids) - 1))
    return [sorted(groups[i], key=lambda r: r["rank"]) for i in ids]


def mmi_score(row, lam, gamma):
    return row["fwd"] + lam * row["bwd"] + gamma * row["length"]


def choose(groups, lam, gamma):
    """Index of the best candidate of each source: max score, ties -> lower rank."""
    out = []
    for cands in groups:
        best = max(range(len(cands)),
                   key=lambda i: (mmi_score(cands[i], lam, gamma), -cands[i]["rank"]))
        out.append(best)
    return out


def rerank(groups, lam, gamma):
    """The re-ranked best response of each source (a list of strings)."""
    return [cands[i]["candidate"] for cands, i in zip(groups, choose(groups, lam, gamma))]


def parse_grid(text):
    """'0,0.5,1' or 'start:stop:step' (stop included) -> list of floats."""
    where = "grid %r" % text
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise MirrorError("%s: give 'start:stop:step' or 'a,b,c'" % where)
        start, stop, step = (_number(float, v, where) for v in parts)
        if step <= 0:
            raise MirrorError("grid %r: the step must be > 0" % text)
        n = int(math.floor((stop - start) / step + 1e-9)) + 1
        return [round(start + i * step, 10) for i in range(max(n, 0))]
    return [_number(float, v, where) for v in text.split(",") if v.strip()]


def objective_fn(name, refs):
    """A function hyps (list of str) -> float, using the evaluator's own metrics."""
    from onmt_mirror.evaluate import metrics

    if name == "sacrebleu":
        return lambda hyps: metrics.sacrebleu_score(refs, hyps)
    if name not in metrics.BLEU_WEIGHTS:
        raise MirrorError("objective %r: choose from %s, sacrebleu"
                          % (name, ", ".join(metrics.BLEU_WEIGHTS)))
    ref_tok = [metrics.tokenize(r) for r in refs]
    return lambda hyps: metrics.bleu(ref_tok, [metrics.tokenize(h) for h in hyps])[name]


def grid_search(groups, refs, lambdas, gammas, objective="bleu4"):
    """Every (λ, γ) of the grid -> objective on refs. Returns (best dict, table rows).

    Best: the highest objective; ties go to the smallest |λ| + |γ|, then grid order
    (so an uninformative objective falls back to the forward model's own choice)."""
    if len(groups) != len(refs):
        raise MirrorError("%d sources in the scores but %d references"
                          % (len(groups), len(refs)))
    score = objective_fn(objective, refs)
    cache, table = {}, []
    for lam in lambdas:
        for gamma in gammas:
            picks = tuple(choose(groups, lam, gamma))
            if picks not in cache:
                cache[picks] = score([c[i]["candidate"] for c, i in zip(groups, picks)])
            changed = sum(i != 0 for i in picks)
            table.append({"lambda": lam, "gamma": gamma, objective: cache[picks],
                          "changed": changed})
    best = max(table, key=lambda r: (r[objective], -(abs(r["lambda"]) + abs(r["gamma"]))))
    return dict(best, objective=objective), table
