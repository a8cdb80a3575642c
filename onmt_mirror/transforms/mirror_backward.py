"""The `mirror_backward` transform: a dialogue triple -> src = y, tgt = x (MMI's p(x|y)).

MMI-bidi (Li et al., 2016) re-ranks the forward model's n-best list with a backward model
p(source | target). Here the backward model predicts the query x from the response y, so
it trains on the same corpus files as every other model with src = y (the tgt line) and
tgt = x (the last turn of the src line). Turns, truncation and bad lines follow the
mirror_triple options (-mirror_turn_sep, -mirror_max_utterance_tokens, -mirror_bad_line),
which that transform adds to every parser.
"""
from onmt.transforms.transform import Transform

from onmt_mirror.data_check import check_pair
from onmt_mirror.dialogue import split_turns
from onmt_mirror.transforms.mirror_triple import MirrorTripleTransform


class MirrorBackwardTransform(Transform):
    """Dialogue history + response -> src = response, tgt = query."""

    @classmethod
    def _validate_options(cls, opts):
        for cid, corpus in (getattr(opts, "data", None) or {}).items():
            if "mirror_backward" in (corpus.get("transforms") or []):
                check_pair("corpus %r" % cid, corpus.get("path_src"),
                           corpus.get("path_tgt"), opts)

    def _parse_opts(self):
        self.sep = self.opts.mirror_turn_sep
        self.max_u = self.opts.mirror_max_utterance_tokens
        self.skip_bad = self.opts.mirror_bad_line == "skip"
        self.counts = {"skipped_one_turn": 0, "skipped_empty_turn": 0}

    _bad = MirrorTripleTransform._bad

    def apply(self, example, is_train=False, stats=None, **kwargs):
        turns = split_turns(example["src"], self.sep)
        if len(turns) < 2 or not turns[-1]:
            return self._bad("one_turn" if len(turns) < 2 else "empty_turn", example,
                             "no query turn: turns are separated by %r" % self.sep)
        y = [t for t in (example.get("tgt") or []) if t]
        if not y:
            return self._bad("empty_turn", example, "empty response (tgt line)")
        example["src"], example["tgt"] = y[: self.max_u], turns[-1][: self.max_u]
        return example

    def stats(self):
        return ", ".join("%s: %d" % kv for kv in self.counts.items() if kv[1])

    def _repr_args(self):
        return "sep=%r, max_u=%d" % (self.sep, self.max_u)
