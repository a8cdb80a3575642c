"""The chat command's HTTP side: the static page, request checks, forwarding to onmt_server.

The page POSTs `{"history": [turn, ...], "another": false}` to `/chat`. A request is
checked here (the stock server answers malformed JSON with an HTML 400 and a JSON value of
the wrong shape with an HTML 500), cut to its last `turns` turns, joined with the turn
separator and sent as `[{"id": model_id, "src": history}]` to `<server>/translate`, whose
preprocess hook tokenises it with the model's vocabulary. The reply comes back as the
model's tokens and, detokenised, as text to show. `another: true` uses `another_id`, the
config entry that samples z from the prior: every call to it draws a new z from the
server's running random stream.
It is served by waitress (threaded; onmt_server's own WSGI server) and needs neither flask
nor torch.
"""
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources

import waitress.server
import waitress.utilities
import waitress.wasyncore

from onmt_mirror.chat.text import detokenize
from onmt_mirror.dialogue import SEPARATOR, join_turns

STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/chat.js": ("chat.js", "text/javascript; charset=utf-8")}


@dataclass
class ChatConfig:
    server: str = "http://127.0.0.1:5000/translator"  # onmt_server's --url_root
    model_id: int = 100  # first response: z = prior mean
    another_id: int = 101  # "another response": z sampled
    turns: int = 2  # the last turns sent (context + query for the paper's models)
    sep: str = SEPARATOR  # -mirror_turn_sep
    max_turn_chars: int = 500
    max_body_bytes: int = 64 * 1024
    timeout: float = 60.0  # seconds to wait for onmt_server
    read_timeout: float = 10.0  # seconds a client may take to send one request
    threads: int = 8  # waitress worker threads (requests forwarded at once)
    verbose: bool = True  # a log line per /chat request


class BadRequest(Exception):
    """A request the chat command answers with a 4xx and a message, never forwards."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


def check_request(body, cfg):
    """Raw body (bytes) -> (model id, history string); BadRequest (4xx) when unusable."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(400, "request body is not JSON: %s" % exc) from None
    if not isinstance(data, dict) or not isinstance(data.get("history"), list):
        raise BadRequest(400, 'expected a JSON object {"history": ["turn", ...], '
                         '"another": false}')
    history = data["history"]
    if not history:
        raise BadRequest(400, "empty history: send at least the user's turn")
    if not all(isinstance(t, str) for t in history):
        raise BadRequest(400, "every turn of the history must be a string")
    turns = [" ".join(t.split()) for t in history[-cfg.turns:]]
    if not all(turns):
        raise BadRequest(400, "empty turn in the history")
    for turn in turns:
        if len(turn) > cfg.max_turn_chars:
            raise BadRequest(413, "turn too long: %d characters (at most %d)"
                             % (len(turn), cfg.max_turn_chars))
        if cfg.sep in turn.split():
            raise BadRequest(400, "a turn contains the turn separator %r" % cfg.sep)
    model_id = cfg.another_id if data.get("another") else cfg.model_id
    return model_id, join_turns(turns, cfg.sep)


def forward(cfg, model_id, src):
    """POST to onmt_server; -> (HTTP status, JSON reply for the page)."""
    payload = json.dumps([{"id": model_id, "src": src}]).encode("utf-8")
    req = urllib.request.Request(cfg.server.rstrip("/") + "/translate", data=payload,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=cfg.timeout) as resp:
            reply = json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        return 502, {"error": "onmt_server answered HTTP %d" % exc.code}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return 502, {"error": "onmt_server at %s unreachable: %s" % (cfg.server, exc)}
    if isinstance(reply, dict):  # the stock server's {"status": "error", "error": ...}
        return 422, {"error": "onmt_server: %s" % reply.get("error", reply)}
    try:
        best = reply[0][0]
        return 200, {"response": detokenize(best["tgt"]), "tokens": best["tgt"],
                     "score": best["pred_score"], "src": src, "model_id": model_id}
    except (IndexError, KeyError, TypeError):
        return 502, {"error": "unexpected reply from onmt_server: %.200s" % reply}


def _json(start_response, status, obj):
    body = json.dumps(obj).encode("utf-8")
    start_response("%d %s" % (status, HTTPStatus(status).phrase),
                   [("Content-Type", "application/json"),
                    ("Content-Length", str(len(body)))])
    return [body]


def make_app(cfg):
    """The WSGI application: GET / (the page), /chat.js, /config; POST /chat."""
    static = resources.files("onmt_mirror.chat") / "static"

    def app(environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        if method == "GET" and path == "/config":
            return _json(start_response, 200, {
                "turns": cfg.turns, "sep": cfg.sep, "model_id": cfg.model_id,
                "another_id": cfg.another_id, "max_turn_chars": cfg.max_turn_chars})
        if method == "GET" and path in STATIC:
            name, ctype = STATIC[path]
            body = (static / name).read_bytes()
            start_response("200 OK", [("Content-Type", ctype),
                                      ("Content-Length", str(len(body)))])
            return [body]
        if method != "POST" or path != "/chat":
            return _json(start_response, 404, {"error": "no such page: %s %s (the "
                                               "page is GET /, its API POST /chat)"
                                               % (method, path)})
        # waitress calls the app only with the whole body read (max_request_body_size)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length > cfg.max_body_bytes:
            return _json(start_response, 413, {"error": "request too large: %d bytes "
                                               "(at most %d)" % (length, cfg.max_body_bytes)})
        try:
            model_id, src = check_request(environ["wsgi.input"].read(length), cfg)
        except BadRequest as exc:
            return _json(start_response, exc.status, {"error": exc.message})
        status, reply = forward(cfg, model_id, src)
        if cfg.verbose:
            print("POST /chat -> %d (model %d)" % (status, model_id), flush=True)
        return _json(start_response, status, reply)

    return app


class ReadTimeout(waitress.utilities.BadRequest):
    """waitress's 400 for a request that stopped arriving, as the JSON the page reads."""

    def __init__(self, seconds):
        super().__init__("request incomplete after %g s (headers or body missing: check "
            "Content-Length)" % seconds)

    def to_response(self, ident=None):
        body = json.dumps({"error": self.body}).encode("utf-8")
        return "400 Bad Request", [("Content-Type", "application/json")], body


class ChatServer(waitress.server.TcpWSGIServer):
    """waitress with a read timeout that answers 400.

    waitress hands the app only complete requests; a client that stops sending (e.g.
    `Content-Length: 1000` and 19 bytes) would hold its connection until the idle
    timeout closes it without a reply. Every second (`cleanup_interval`) the server's
    maintenance now turns a request still incomplete after `read_timeout` seconds into
    waitress's own error reply path. Uses waitress's channel attributes (`request`,
    `requests`, `requests_lock`, checked with waitress 3.0.2), the same ones its
    received() uses to queue a request that failed to parse.
    """

    def maintenance(self, now):
        cutoff = now - self.read_timeout
        for channel in list(self.active_channels.values()):
            with channel.requests_lock:
                partial = channel.request
                if partial is None or channel.requests or channel.last_activity > cutoff:
                    continue
                partial.error = ReadTimeout(self.read_timeout)
                partial.completed = True
                channel.request = None
                channel.requests.append(partial)
                self.add_task(channel)
        super().maintenance(now)

    def stop(self):
        """Close the listening socket and every connection; run() then returns."""
        self.task_dispatcher.shutdown(timeout=5)
        waitress.wasyncore.close_all(self._map)


def make_server(cfg, host="127.0.0.1", port=8000):
    """A threaded waitress server for the app; `.effective_port` is the bound port."""
    server = ChatServer(make_app(cfg), host=host, port=port, threads=cfg.threads,
                        channel_timeout=max(30, cfg.read_timeout), cleanup_interval=1,
                        # read a body up to 16x the limit, so that the client gets the
                        # app's JSON 413, not a reset; beyond that waitress's own 413
                        max_request_body_size=16 * cfg.max_body_bytes,
                        ident="onmt-mirror-chat")
    server.read_timeout = cfg.read_timeout
    return server
