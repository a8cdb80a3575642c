"""onmt_server: a request that Mirror's preprocess hook refuses keeps the model loaded."""
import threading

from onmt.translate.translation_server import ServerModel

from onmt_mirror.chat.preprocess import RequestRefused
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
