"""The `mirror_triple` transform: a dialogue-history line -> context c, query x (src), y (tgt).

OpenNMT-py batches only carry `src` and `tgt`, so the three fields travel as
src = `c ｟mirror_query｠ x` and tgt = y; MirrorModel splits src at the marker. Context
turns (when more than one is kept) are joined with ｟mirror_turn｠.

Bad lines (one turn only, an empty turn) are an error naming corpus, file and line, or are
skipped and counted (-mirror_bad_line skip); counts appear in the transform statistics.
Whole-file problems (unequal src/tgt line counts, invalid UTF-8) are found before training
starts, by `check_corpora`.
"""
from onmt.transforms.transform import Transform
from onmt.utils.logging import logger

from onmt_mirror.data_check import check_corpora
from onmt_mirror.dialogue import QUERY_TOKEN, TURN_TOKEN, split_turns, turn_problem
from onmt_mirror.errors import MirrorError
from onmt_mirror.opts import add_mirror_options

INFER = "infer"  # the corpus id of onmt_translate's -src (OpenNMT-py's CorpusName.INFER)
SHORTENED_WARNINGS = 10  # -src lines warned about one by one; then one line says so

def _where(example, opts):
    cid = example.get("cid", "infer")
    line = example.get("cid_line_number", -1) + 1
    corpus = getattr(opts, "data", {}).get(cid, {}) if cid != "infer" else {}
    path = corpus.get("path_src") or getattr(opts, "src", None) or "?"
    return "corpus %r, file %s, line %d" % (cid, path, line)


class MirrorTripleTransform(Transform):
    """Dialogue history -> c ｟mirror_query｠ x; the response is truncated as y."""

    @classmethod
    def add_options(cls, parser):
        add_mirror_options(parser)

    @classmethod
    def _validate_options(cls, opts):
        check_corpora(opts)

    @classmethod
    def get_specials(cls, opts):
        return ([QUERY_TOKEN, TURN_TOKEN], [])

    def _parse_opts(self):
        self.sep = self.opts.mirror_turn_sep
        self.context_turns = self.opts.mirror_context_turns
        self.max_c = self.opts.mirror_max_context_tokens
        self.max_u = self.opts.mirror_max_utterance_tokens
        self.skip_bad = self.opts.mirror_bad_line == "skip"
        self.counts = {"skipped_one_turn": 0, "skipped_empty_turn": 0,
                       "truncated_c": 0, "truncated_x": 0, "truncated_y": 0}
        # (corpus, line) already counted as truncated: training reads a corpus once per
        # pass, and a line is counted once, not once per pass
        self._truncated = {"truncated_c": set(), "truncated_x": set(),
                           "truncated_y": set()}
        self._shortened_src = 0

    def _warn_shortened(self, example, what, length, kept, option):
        """A -src line that onmt_translate shortens gets a warning naming file and line:
        the counts alone reach only a training log."""
        if example.get("cid") != INFER or self._shortened_src > SHORTENED_WARNINGS:
            return
        self._shortened_src += 1
        if self._shortened_src > SHORTENED_WARNINGS:
            logger.warning("-src: more lines are shortened; they are not listed")
            return
        logger.warning("-src %s, line %d: the %s has %d tokens, shortened to its %s (%s)",
                       getattr(self.opts, "src", "?"), example.get("cid_line_number", -1) + 1,
                       what, length, kept, option)

    def _count_truncated(self, key, example):
        line = example.get("cid_line_number")
        if line is not None:
            where = (example.get("cid"), line)
            if where in self._truncated[key]:
                return
            self._truncated[key].add(where)
        self.counts[key] += 1

    def _bad(self, kind, example, message):
        if not self.skip_bad:
            raise MirrorError("%s: %s" % (_where(example, self.opts), message))
        self.counts["skipped_" + kind] += 1
        return None

    def apply(self, example, is_train=False, stats=None, **kwargs):
        turns = split_turns(example["src"], self.sep)
        problem = turn_problem(turns, self.sep)
        if problem:
            return self._bad(problem[0], example, problem[1])
        context = []
        for turn in turns[-1 - self.context_turns:-1]:
            context += ([TURN_TOKEN] if context else []) + turn
        x = turns[-1]
        if len(context) > self.max_c:
            self._warn_shortened(example, "context c", len(context), "last %d" % self.max_c,
                                 "-mirror_max_context_tokens")
            context = context[-self.max_c:]
            self._count_truncated("truncated_c", example)
        if len(x) > self.max_u:
            self._warn_shortened(example, "query x", len(x), "first %d" % self.max_u,
                                 "-mirror_max_utterance_tokens")
            x = x[: self.max_u]
            self._count_truncated("truncated_x", example)
        example["src"] = context + [QUERY_TOKEN] + x
        if example.get("tgt") is not None:
            y = [t for t in example["tgt"] if t]
            if not y:
                return self._bad("empty_turn", example, "empty response (tgt line)")
            if len(y) > self.max_u:
                y = y[: self.max_u]
                self._count_truncated("truncated_y", example)
            example["tgt"] = y
        return example

    def stats(self):
        return ", ".join("%s: %d" % kv for kv in self.counts.items() if kv[1])

    def _repr_args(self):
        return "sep=%r, context_turns=%d, max_c=%d, max_u=%d" % (
            self.sep, self.context_turns, self.max_c, self.max_u)


def triple_sort_key(example, stock_key):
    """How OpenNMT-py orders a bucket before cutting it into batches, for triples.

    The stock key sorts by (len(src), len(tgt)), i.e. by c + x: a batch of 512 then has
    similar c + x but any y, so y's longest row (often 3x the typical one) sets the
    number of recurrent steps of both y decoders. Sorting by the longest of c, x and y in
    bins of 4 tokens, then by y and x, keeps all three fields short together (DailyDialog,
    buckets of 32,768, batches of 512: the mean longest y drops from 66 to 23 tokens, c
    and x stay at ~25). Lines without the query marker keep the stock key."""
    src = example["src"]["src"].split(" ")
    if QUERY_TOKEN not in src or not example.get("tgt"):
        return stock_key(example)
    c = src.index(QUERY_TOKEN)
    x = len(src) - c - 1
    y = len(example["tgt"]["tgt_ids"])
    return max(c, x, y) // 4, y // 4, x
