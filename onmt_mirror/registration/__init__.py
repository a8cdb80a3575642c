"""Every change onmt_mirror makes to OpenNMT-py internals (checked against 3.5.1 only).

Imported by the .pth hook right after `import onmt`, so before any CLI builds its parser.
OpenNMT-py has registries for transforms and encoders only; everything else replaces an
attribute that the stock code looks up at call time. One module per concern, each change
declared with its reason in PATCHES (docs/design.md's table is printed from it, see
patching.py).
"""
import importlib
import sys

import onmt

from onmt_mirror.errors import MirrorError, install_excepthook
from onmt_mirror.registration.patching import (  # noqa: F401  (the package's interface)
    PATCHES,
    declares,
    original,
    table,
)

ONMT_VERSION = "3.5.1"
CONCERNS = ("data", "vocab", "model", "loss", "checkpoints", "decoding", "server", "optimizer",
            "training", "distributed", "options")

declares(sys, "excepthook", why="bad input must read as one line, not a traceback (also "
         "errors re-raised from data workers): `MirrorError` prints as one line, exit 1")
install_excepthook()

if onmt.__version__ != ONMT_VERSION:
    raise MirrorError("onmt_mirror needs OpenNMT-py %s, found %s: pip install --no-deps "
                      "opennmt-py==%s (or set ONMT_MIRROR_DISABLE=1)"
                      % (ONMT_VERSION, onmt.__version__, ONMT_VERSION))

# each attribute is replaced once, so this order only decides PATCHES' (and the table's)
for _concern in CONCERNS:
    importlib.import_module("%s.%s" % (__name__, _concern))
