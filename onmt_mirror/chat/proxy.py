"""The chat command's HTTP side: the static page, request checks, forwarding to onmt_server.

The page POSTs `{"history": [turn, ...], "another": false}` to `/chat`. A request is
checked here (the stock server answers malformed JSON with an HTML 400 and a JSON value of
the wrong shape with an HTML 500), cut to its last `turns` turns, tokenised lightly, joined
with the turn separator and sent as `[{"id": model_id, "src": history}]` to
`<server>/translate`. `another: true` uses `another_id`, the config entry that samples z
from the prior: every call to it draws a new z from the server's running random stream.
Only the standard library is used: the command needs neither flask nor torch.
"""
import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/chat.js": ("chat.js", "text/javascript; charset=utf-8")}
_PUNCT = re.compile(r"(?<=\S)([.,?!;:])(?=\s|$)")


@dataclass
class ChatConfig:
    server: str = "http://127.0.0.1:5000/translator"  # onmt_server's --url_root
    model_id: int = 100  # first response: z = prior mean
    another_id: int = 101  # "another response": z sampled
    turns: int = 2  # the last turns sent (context + query for the paper's models)
    sep: str = "__eou__"  # -mirror_turn_sep
    max_turn_chars: int = 500
    max_body_bytes: int = 64 * 1024
    tokenize: bool = True  # "tea?" -> "tea ?", as in the prepared corpora
    timeout: float = 60.0


class BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


def tokenize(turn):
    """Split trailing punctuation off words; collapse spaces."""
    return " ".join(_PUNCT.sub(r" \1", turn).split())


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
    if cfg.tokenize:
        turns = [tokenize(t) for t in turns]
    model_id = cfg.another_id if data.get("another") else cfg.model_id
    return model_id, (" %s " % cfg.sep).join(turns)


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
        return 200, {"response": best["tgt"], "score": best["pred_score"], "src": src,
                     "model_id": model_id}
    except (IndexError, KeyError, TypeError):
        return 502, {"error": "unexpected reply from onmt_server: %.200s" % reply}


def make_handler(cfg):
    static = resources.files("onmt_mirror.chat") / "static"

    class ChatHandler(BaseHTTPRequestHandler):
        server_version = "onmt-mirror-chat"

        def send_json(self, status, obj):
            body = json.dumps(obj).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/config":
                return self.send_json(200, {"turns": cfg.turns, "sep": cfg.sep,
                                            "model_id": cfg.model_id,
                                            "another_id": cfg.another_id,
                                            "max_turn_chars": cfg.max_turn_chars})
            if self.path not in STATIC:
                return self.send_json(404, {"error": "no such page: %s" % self.path})
            name, ctype = STATIC[self.path]
            body = (static / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            if self.path != "/chat":
                return self.send_json(404, {"error": "POST to /chat"})
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return self.send_json(400, {"error": "bad Content-Length"})
            if length > cfg.max_body_bytes:
                # read (a bounded amount of) the body so the client sees the answer, not
                # a connection reset; then close rather than parse the rest
                self.rfile.read(min(length, 16 * cfg.max_body_bytes))
                self.close_connection = True
                return self.send_json(413, {"error": "request too large: %d bytes (at "
                                            "most %d)" % (length, cfg.max_body_bytes)})
            try:
                model_id, src = check_request(self.rfile.read(length), cfg)
            except BadRequest as exc:
                return self.send_json(exc.status, {"error": exc.message})
            self.send_json(*forward(cfg, model_id, src))

        def log_message(self, fmt, *args):
            if self.server.verbose:
                super().log_message(fmt, *args)

    return ChatHandler


def make_server(cfg, host="127.0.0.1", port=8000, verbose=True):
    server = ThreadingHTTPServer((host, port), make_handler(cfg))
    server.daemon_threads = True
    server.verbose = verbose
    return server

