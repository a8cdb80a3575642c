"""onmt_server: its config is checked before it is used, and a request that Mirror's
preprocess hook refuses keeps the model loaded."""
import json
import os
import threading

from onmt.translate.translation_server import ServerModel, TranslationServer

from onmt_mirror.chat.preprocess import RequestRefused
from onmt_mirror.errors import MirrorError, MissingFileError
from onmt_mirror.registration.patching import original, replaces

refused = threading.local()  # the ServerModel whose request this thread just refused


@replaces(ServerModel, "run", why="remembers a request refused by the Mirror preprocess "
          "hook (`RequestRefused`), and restarts the unload timer that run() stopped")
def server_model_run(self, inputs):
    try:
        return original(ServerModel, "run")(self, inputs)
    except RequestRefused:
        refused.model = self
        self.reset_unload_timer()  # run() stopped it; the model stays in use
        raise


@replaces(ServerModel, "unload", why="the stock /translate route unloads the model after "
          "any ServerModelError, so a refused request cost the next one a reload; that one "
          "unload is skipped (same thread)")
def server_model_unload(self):
    if getattr(refused, "model", None) is self:
        refused.model = None
        self.logger.info("Model #%d stays loaded: the request was refused before it "
                         "reached the model", self.model_id)
        return
    original(ServerModel, "unload")(self)


@replaces(TranslationServer, "start", why="a missing, unreadable or malformed --model_config "
          "was a FileNotFoundError/JSONDecodeError/KeyError traceback; now one line naming "
          "the file (and the line of a JSON error)")
def translation_server_start(self, config_file):
    check_server_config(config_file)
    original(TranslationServer, "start")(self, config_file)


def check_server_config(path):
    """A MirrorError unless `path` is a JSON object with a list of "models"."""
    if not os.path.isfile(path):
        raise MissingFileError("--model_config %s: %s" % (
            path, "is a directory" if os.path.isdir(path) else "file not found"))
    try:
        with open(path, encoding="utf-8") as f:
            conf = json.load(f)
    except UnicodeDecodeError as exc:
        raise MirrorError("--model_config %s: invalid UTF-8 (byte 0x%02x at offset %d)"
                          % (path, exc.object[exc.start], exc.start)) from None
    except json.JSONDecodeError as exc:
        raise MirrorError("--model_config %s, line %d, column %d: not JSON (%s)"
                          % (path, exc.lineno, exc.colno, exc.msg)) from None
    if not isinstance(conf, dict) or not isinstance(conf.get("models"), list):
        raise MirrorError('--model_config %s: expected a JSON object with a "models" list '
                          "(docs/server.md)" % path)
