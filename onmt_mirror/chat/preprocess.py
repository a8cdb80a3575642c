"""A preprocess function for the stock `onmt_server`: dialogue history -> Mirror's src.

OpenNMT-py 3.5.1's REST server applies no `-transforms` to a request: it feeds the request
text straight to the model. Its JSON config does take `"preprocess"`: a list of functions
`f(sequence, server_model) -> sequence` run on every request before tokenisation. This one
does for a request what the `mirror_triple` transform does for a `-src` line (it calls the
transform), so that `src` can be the dialogue history, turns joined by ` __eou__ `:

    "preprocess": ["onmt_mirror.chat.preprocess.mirror_history"]

Optional `"custom_opt"` keys in the model's config entry:
- `mirror_opening` (str): a history of one turn (the user's first turn, nothing before it)
  gets this turn prepended as its context, e.g. "hello ." (DailyDialog's usual first
  turn). Without it, a one-turn history is an error, as it is for onmt_translate.
- `mirror_max_request_tokens` (int, default 1000) and `mirror_max_request_chars` (int,
  default 10000): longer requests are refused (the transform would truncate c and x
  anyway; this bounds the work per request, also for one 100,000-character token).
- `mirror_lowercase` (bool, default false): lowercase the history (for models trained on
  `python -m onmt_mirror.prepare --lowercase` data).
- `mirror_tokenize` (bool, default true): tokenise each turn as the corpus was, so typed
  "tea?" reaches the model as "tea ?" (onmt_mirror/chat/text.py; a turn tokenised already
  stays as it is). Set it to false to send the history exactly as written.

Bad requests raise RequestRefused, a ServerModelError: the stock server answers HTTP 200
with `{"status": "error", "error": "<message>"}`. The stock route then unloads the model;
for RequestRefused the plugin keeps it loaded (registration/server.py), since the request
never reached it.
"""
import unicodedata

from onmt.translate.translation_server import ServerModelError

from onmt_mirror.chat.text import tokenize
from onmt_mirror.dialogue import split_turns
from onmt_mirror.errors import MirrorError
from onmt_mirror.transforms.mirror_triple import MirrorTripleTransform

DEFAULT_MAX_REQUEST_TOKENS = 1000
DEFAULT_MAX_REQUEST_CHARS = 10000


class RequestRefused(ServerModelError):
    """A request refused before it reached the model (the model stays loaded)."""


def refuse_control_characters(text):
    """RequestRefused for a control character other than tab and line ends: the tokenizer
    stops reading at a NUL, so "hello \\x00 there" reached the model as "hello"."""
    for column, char in enumerate(text, 1):
        if unicodedata.category(char) == "Cc" and char not in "\t\n\r":
            raise RequestRefused("control character U+%04X at column %d: type the turn "
                                 "without it" % (ord(char), column))


def history_to_source(text, opt, custom_opt=None, vocabulary=None):
    """One request's history -> `c ｟mirror_query｠ x`; RequestRefused when unusable.

    With `vocabulary` (the model's tokens) each turn is tokenised as the corpus was
    (onmt_mirror.chat.text: "tea?" -> "tea ?"); without, it is taken as it is.
    """
    custom_opt = custom_opt or {}
    sep = opt.mirror_turn_sep
    refuse_control_characters(text)
    if custom_opt.get("mirror_lowercase"):
        text = text.lower()
    chars = int(custom_opt.get("mirror_max_request_chars", DEFAULT_MAX_REQUEST_CHARS))
    if len(text) > chars:
        raise RequestRefused("history too long: %d characters (at most %d)"
                             % (len(text), chars))
    if not text.split():
        raise RequestRefused("empty history: send the dialogue turns joined by %r" % sep)
    turns = split_turns(text.split(), sep)
    if any(not turn for turn in turns):
        raise RequestRefused("empty turn in the history (turns are joined by %r)" % sep)
    if len(turns) == 1:
        opening = custom_opt.get("mirror_opening")
        if not opening:
            raise RequestRefused(
                "one turn only: Mirror needs a context turn and a query joined by %r "
                "(or set custom_opt.mirror_opening in the server config)" % sep)
        turns.insert(0, opening.split())
    if vocabulary is not None:
        turns = [tokenize(" ".join(turn), vocabulary).split() for turn in turns]
    tokens = [tok for turn in turns for tok in [sep] + turn][1:]
    limit = int(custom_opt.get("mirror_max_request_tokens", DEFAULT_MAX_REQUEST_TOKENS))
    if len(tokens) > limit:
        raise RequestRefused("history too long: %d tokens (at most %d)"
                             % (len(tokens), limit))
    try:
        example = MirrorTripleTransform(opt).apply({"src": tokens, "tgt": None})
    except MirrorError as exc:  # defensive: the checks above cover the transform's
        raise RequestRefused(str(exc)) from None
    return " ".join(example["src"])


def mirror_history(sequence, server_model):
    """The `"preprocess"` hook: rewrite each segment of one request."""
    custom_opt = server_model.custom_opt or {}
    vocabulary = None
    if custom_opt.get("mirror_tokenize", True):
        vocabulary = set(server_model.translator.vocabs["src"].ids_to_tokens)
    sequence = dict(sequence)
    sequence["seg"] = [history_to_source(seg, server_model.opt, custom_opt, vocabulary)
                       for seg in sequence["seg"]]
    return sequence
