"""`python -m onmt_mirror.chat --cli -model CKPT [onmt_translate options]`: chat in a terminal.

Each typed turn is tokenised as the corpus was (onmt_mirror/chat/text.py), joined to the
history and decoded like `onmt_translate -src` would decode that line: the last
-mirror_context_turns turns before it are the context (the checkpoint's value), a first
turn gets `--opening` as its context. The reply (z = the prior mean, -n_best of them) is
shown detokenised and kept, as tokens, in the history. Commands:

    /z     another reply to the last turn with z sampled from the prior; with
           -mirror_num_z K, K samples decoded at once (K x n_best replies, or the n_best
           re-ranked ones with -mirror_rerank); the first one replaces the reply kept
    /new   forget the conversation
    /quit  (or end of input)

The model is loaded once; mean and sampled replies are two Translators on it. Sampling
uses torch's global stream, seeded once by -seed.
"""
import copy
import io
import sys

import onmt.model_builder
import onmt.opts
import torch
from onmt.inputters.text_utils import textbatch_to_tensor
from onmt.translate import GNMTGlobalScorer
from onmt.translate.translation_server import ServerModelError
from onmt.translate.translator import Translator
from onmt.utils.parse import ArgumentParser

from onmt_mirror.chat.preprocess import history_to_source, refuse_control_characters
from onmt_mirror.chat.text import detokenize, tokenize, unknown_tokens
from onmt_mirror.dialogue import join_turns
from onmt_mirror.errors import MirrorError
from onmt_mirror.models.mirror import MirrorModel

HELP = ("Type a turn. /z: another reply with z sampled from the prior; /new: a new "
        "conversation; /quit or end of input: stop.")


def parse_opt(argv):
    """onmt_translate's parser (the plugin's options included); -src is not read."""
    parser = ArgumentParser(prog="python -m onmt_mirror.chat --cli",
                            description=__doc__)
    onmt.opts.translate_opts(parser)
    parser.add_argument("--opening", "-opening", default="hello .",
                        help="context of the first turn (default %(default)r, "
                        "DailyDialog's usual first turn)")
    opt = parser.parse_args(argv + ["-src", "dummy_src", "-transforms", "mirror_triple"])
    ArgumentParser.validate_translate_opts(opt)
    return opt


class Chat:
    """One conversation with a loaded checkpoint."""

    def __init__(self, opt):
        vocabs, model, model_opt = onmt.model_builder.load_test_model(
            opt, 0 if opt.gpu > -1 else -1)
        if not isinstance(model, MirrorModel):
            raise MirrorError("%s is not a Mirror checkpoint: the terminal chat needs one"
                              % opt.models[0])
        for name in ("mirror_context_turns", "mirror_max_context_tokens",
                     "mirror_max_utterance_tokens", "mirror_turn_sep"):
            setattr(opt, name, getattr(model_opt, name))  # as the model was trained
        self.opt, self.model = opt, model
        self.vocabulary = set(vocabs["src"].ids_to_tokens)
        self.device = torch.device("cuda", opt.gpu) if opt.gpu > -1 else torch.device("cpu")
        mean_opt = copy.copy(opt)
        mean_opt.mirror_num_z, mean_opt.mirror_rerank = 1, False
        mean_opt.mirror_rerank_scores = None
        self.mean = self._translator(vocabs, mean_opt, model_opt)
        self.sampled = self._translator(vocabs, opt, model_opt)
        self.history = []  # turns as tokens, the user's first

    def _translator(self, vocabs, opt, model_opt):
        return Translator.from_opt(self.model, vocabs, opt, model_opt,
                                   global_scorer=GNMTGlobalScorer.from_opt(opt),
                                   out_file=io.StringIO(), report_score=False)

    def decode(self, history, translator, z_mode):
        """Reply candidates (token strings, best first) to the last turn of `history`;
        RequestRefused (a ServerModelError) for a turn over the length limits."""
        window = history[-1 - self.opt.mirror_context_turns:]
        src = history_to_source(join_turns(window, self.opt.mirror_turn_sep), self.opt,
                                {"mirror_opening": self.opt.opening})
        self.model.z_mode = z_mode
        batch = textbatch_to_tensor(translator.vocabs, [{"src": {"src": src}, "tgt": None}],
                                    self.device)
        _, predictions = translator._translate(batch)
        return predictions[0]

    def say(self, text):
        """A user turn -> (reply candidates as text, unknown tokens of the turn)."""
        refuse_control_characters(text)
        turn = tokenize(text, self.vocabulary)
        replies = self.decode(self.history + [turn], self.mean, "mean")
        self.history += [turn, replies[0]]
        return [detokenize(r) for r in replies], unknown_tokens(turn, self.vocabulary)

    def another(self):
        """Sampled-z replies to the last user turn; the first replaces the kept reply."""
        replies = self.decode(self.history[:-1], self.sampled, "sample")
        self.history[-1] = replies[0]
        return [detokenize(r) for r in replies]


def show(replies, tag, out):
    out.write("mirror%s: %s\n" % (tag, replies[0]))
    for rank, reply in enumerate(replies[1:], 2):
        out.write("  %d. %s\n" % (rank, reply))
    out.flush()


def run(chat, lines, out, err, prompt=False):
    """The loop: read turns and commands from `lines`, answer on `out`, notes on `err`."""
    err.write("%s (context: %d turn(s) before each query)\n"
              % (HELP, chat.opt.mirror_context_turns))
    while True:
        if prompt:
            out.write("you> ")
            out.flush()
        line = lines.readline()
        if not line or line.strip() == "/quit":
            return
        text = line.strip()
        if not text:
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # a byte stdin's surrogateescape kept
            err.write("(not UTF-8: byte 0x%02x at column %d; this line is skipped)\n"
                      % (ord(text[exc.start]) - 0xDC00, exc.start + 1))
            continue
        try:
            if text == "/new":
                chat.history = []
                err.write("(a new conversation)\n")
            elif text == "/z":
                if not chat.history:
                    err.write("(nothing to answer yet: type a turn first)\n")
                    continue
                show(chat.another(), " (z sampled)", out)
            elif text.startswith("/"):
                err.write("(unknown command %s) %s\n" % (text.split()[0], HELP))
            else:
                replies, unknown = chat.say(text)
                if unknown:
                    err.write("(not in the model's vocabulary, read as <unk>: %s)\n"
                              % " ".join(unknown))
                show(replies, "", out)
        except ServerModelError as exc:  # e.g. a turn over the length limits
            err.write("(refused: %s)\n" % exc)


def main(argv):
    """Reads stdin as UTF-8 whatever the locale, a bad byte kept as a lone surrogate for
    `run` to report: the locale's strict decoder ended the session at the first one."""
    opt = parse_opt(argv)
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")
    run(Chat(opt), stdin, sys.stdout, sys.stderr, prompt=sys.stdin.isatty())
