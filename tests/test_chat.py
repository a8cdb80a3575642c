"""The chat command (`python -m onmt_mirror.chat`): request checks, forwarding, the page.

The checks run without a server; the forwarding and browser tests use the tiny model and
the stock onmt_server of test_server.py. The browser test needs Debian's chromium driven
by playwright (never `playwright install`). With ONMT_MIRROR_DOCS_SCREENSHOT=1 it also
rewrites docs/chat.png (left alone otherwise, so test runs do not touch the tree).
"""
import json
import os
import shutil
import threading

import pytest

from onmt_mirror.chat.proxy import BadRequest, ChatConfig, check_request, make_server
from test_server import DIALOGUES, free_port, post, start_stock_server

REPO_DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "docs")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ANSWERS = [y for c, x, y in DIALOGUES if (c, x) == ("hello .", "how are you ?")]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]


def check(obj, **cfg):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return check_request(body, ChatConfig(**cfg))


def test_request_is_cut_to_the_last_turns_tokenised_and_routed():
    assert check({"history": ["Hi!", "Do you like tea?"]}) == (
        100, "Hi ! __eou__ Do you like tea ?")
    assert check({"history": ["a", "b", "c"], "another": True}) == (101, "b __eou__ c")
    assert check({"history": ["a", "b", "c"]}, turns=3, tokenize=False) == (
        100, "a __eou__ b __eou__ c")
    assert check({"history": ["it is 5.30, ok?"]})[1] == "it is 5.30 , ok ?"


@pytest.mark.parametrize("body, status, message", [
    (b'{"history": [', 400, "not JSON"),
    (b"\xff\xfe", 400, "not JSON"),
    ([["hello"]], 400, "expected a JSON object"),
    ({"turns": ["hello"]}, 400, "expected a JSON object"),
    ({"history": []}, 400, "empty history"),
    ({"history": ["hi", "  "]}, 400, "empty turn"),
    ({"history": ["hi", 3]}, 400, "must be a string"),
    ({"history": ["hi __eou__ there"]}, 400, "turn separator"),
    ({"history": ["x" * 501]}, 413, "turn too long: 501 characters"),
])
def test_bad_requests_are_4xx_with_a_message(body, status, message):
    with pytest.raises(BadRequest) as err:
        check(body)
    assert err.value.status == status and message in err.value.message


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    """onmt_server (subprocess) + the chat command's server (thread) -> the page's URL."""
    stock = start_stock_server(tmp_path_factory, "chat_server")
    server = make_server(ChatConfig(server=stock.url), "127.0.0.1", 0, verbose=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % server.server_port
    server.shutdown()
    server.server_close()
    stock.stop()


def test_chat_endpoint_forwards_and_reports_errors_as_json(chat):
    status, out = post(chat + "/chat", {"history": ["how are you?"]})
    assert status == 200 and out["src"] == "how are you ?" and out["model_id"] == 100
    assert out["response"]
    status, out = post(chat + "/chat", b'{"history": ', raw=True)
    assert status == 400 and "not JSON" in out["error"]
    status, out = post(chat + "/chat", {"history": ["x " * 40000]})
    assert status == 413 and "request too large" in out["error"]
    assert post(chat + "/nowhere", {})[0] == 404
    assert post(chat + "/chat", {"history": ["hello .", "how are you ?"]})[0] == 200


def test_upstream_errors_are_reported():
    down = ChatConfig(server="http://127.0.0.1:%d/translator" % free_port(), timeout=5)
    from onmt_mirror.chat.proxy import forward

    status, out = forward(down, 100, "hello . __eou__ hi")
    assert status == 502 and "unreachable" in out["error"]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed "
                    "(apt-get install -y chromium); the chat page's browser test needs it")
def test_chat_page_in_chromium_two_turns_and_another_response(chat):
    """Turn 1 "good morning!" (the server adds the opening "hello ." as its context)
    -> "hello ."; turn 2 "how are you?" -> one of its four trained replies; "another
    response" samples z until the reply changes."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 760, "height": 560})
        page.goto(chat + "/")
        replies = []
        for turn in ("good morning!", "how are you?"):
            page.fill("#input", turn)
            page.press("#input", "Enter")
            page.wait_for_function("document.querySelectorAll('.bot').length == %d"
                                   % (len(replies) + 1), timeout=60000)
            replies.append(page.locator(".bot .text").last.inner_text())
        users = page.locator(".user").all_inner_texts()
        assert users == ["good morning!", "how are you?"]
        assert replies[0] == "hello ." and replies[1] in ANSWERS, replies
        assert page.inner_text("#status") == ""
        seen = [replies[-1]]
        for _ in range(8):  # a sampled z may give the same words; try a few samples
            page.click("#another")
            page.wait_for_function("document.querySelectorAll('.alts div').length == %d"
                                   % len(seen), timeout=60000)
            seen.append(page.locator(".bot .text").last.inner_text())
            if seen[-1] != seen[0]:
                break
        assert seen[-1] != seen[0], seen
        assert page.locator(".bot").count() == 2  # replaced in place, not a new turn
        assert "sampled" in page.locator(".bot .tag").last.inner_text()
        shot = page.screenshot(full_page=True)
        assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("ONMT_MIRROR_DOCS_SCREENSHOT"):  # refresh docs/chat.png
            with open(os.path.join(REPO_DOCS, "chat.png"), "wb") as f:
                f.write(shot)
        page.fill("#input", "   ")
        page.press("#input", "Enter")
        assert "Type a turn first" in page.inner_text("#status")
        assert page.locator(".user").count() == 2
        browser.close()
