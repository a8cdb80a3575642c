"""Typed text <-> corpus tokens (onmt_mirror/chat/text.py) and the server hook that uses it."""
import json
from argparse import Namespace

import pytest

from onmt_mirror.chat.preprocess import RequestRefused, history_to_source
from onmt_mirror.chat.text import detokenize, tokenize, unknown_tokens

# words a DailyDialog vocabulary has whole, as the corpus writes them
VOCAB = {"don't", "6:00", "...", "<person>", "i", "know", "it", "is", "?", ".", ","}
OPT = Namespace(mirror_turn_sep="__eou__", mirror_context_turns=1,
                mirror_max_context_tokens=45, mirror_max_utterance_tokens=45,
                mirror_bad_line="error")


@pytest.mark.parametrize("typed, tokens", [
    ("Do you like tea?", "Do you like tea ?"),
    ("I don't know... it's 6:00, ok?!", "I don't know ... it ' s 6:00 , ok ? !"),
    ("It costs $5.30.", "It costs $ 5.30 ."),
    ("ask <person>!", "ask <person> !"),
    ("at 7:45", "at 7 : 45"),  # not in the vocabulary whole: left in known pieces
    ("yes , very much .", "yes , very much ."),  # already tokenised: unchanged
])
def test_typed_text_is_tokenised_as_the_corpus_was(typed, tokens):
    assert tokenize(typed, VOCAB) == tokens


def test_without_a_vocabulary_every_split_stays():
    assert tokenize("I don't know...") == "I don ' t know . . ."


@pytest.mark.parametrize("tokens, shown", [
    ("yes , very much .", "yes, very much."),
    ("i don't know . what is it ?", "i don't know. what is it?"),
    ("it costs $ 5 ( or 6 ) .", "it costs $5 (or 6)."),
    ('he said " no " .', 'he said "no".'),
])
def test_replies_are_detokenised_for_display(tokens, shown):
    assert detokenize(tokens) == shown


def test_unknown_tokens_in_order():
    assert unknown_tokens("i know tea ? cake", VOCAB) == ["tea", "cake"]


def test_the_server_hook_tokenises_each_turn_with_the_vocabulary():
    assert history_to_source("Is it 6:00? __eou__ I don't know...", OPT, {}, VOCAB) == (
        "Is it 6:00 ? ｟mirror_query｠ I don't know ...")
    assert history_to_source("Is it? __eou__ ok", OPT, {}, None) == (
        "Is it? ｟mirror_query｠ ok")  # mirror_tokenize false: as written
    assert history_to_source("Hi!", OPT, {"mirror_opening": "hello ."}, VOCAB) == (
        "hello . ｟mirror_query｠ Hi !")


@pytest.mark.parametrize("text, custom, message", [
    ("a " * 6000, {}, "history too long: 12000 characters (at most 10000)"),
    ("x" * 100 + " __eou__ y", {"mirror_max_request_chars": 50},
     "history too long: 110 characters (at most 50)"),
    ("a?b?c? __eou__ d", {"mirror_max_request_tokens": 5},
     "history too long: 8 tokens (at most 5)"),  # counted after tokenising
])
def test_request_limits(text, custom, message):
    with pytest.raises(RequestRefused) as err:
        history_to_source(text, OPT, custom, VOCAB)
    assert str(err.value) == message


def test_the_human_evaluation_page_shows_detokenised_text():
    from onmt_mirror.evaluate.human_page import render

    page = render("kit", "ann", [{"id": 1, "context": ["do you like tea ?"],
                                  "query": "yes , very much .", "A": "i don't know .",
                                  "B": "then let us have some tea ."}])
    data = page.split('id="kit-data">')[1].split("</script>")[0]
    assert json.loads(data)["items"] == [{
        "id": 1, "context": ["do you like tea?"], "query": "yes, very much.",
        "A": "i don't know.", "B": "then let us have some tea."}]
