"""registration.PATCHES is the complete list of what the plugin changes in OpenNMT-py, and
docs/design.md's table is that list (regenerate it with the command in patching.py)."""
import os
import subprocess
import sys

import onmt.trainer
import pytest

from onmt_mirror import registration
from onmt_mirror.registration.patching import replaces

DESIGN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                      "design.md")
HEADING = "## Every OpenNMT-py internal the plugin touches"

# Run with the plugin off: import every onmt module (but its tests and those of missing
# optional packages), keep every module and class attribute, load the plugin, then print
# the dotted names of the attributes it changed.
CHANGED = r"""
import importlib, inspect, pkgutil, sys, onmt
for info in pkgutil.walk_packages(onmt.__path__, "onmt."):
    try:
        info.name.startswith("onmt.tests.") or importlib.import_module(info.name)
    except ImportError:
        pass
modules = [m for n, m in sorted(sys.modules.items()) if n.split(".")[0] == "onmt"]
owners = {id(m): m for m in modules}
owners.update({id(c): c for m in modules for c in vars(m).values()
               if inspect.isclass(c) and c.__module__.split(".")[0] == "onmt"})
def attributes():
    return {(i, k): v for i, o in owners.items() for k, v in list(vars(o).items())}
before = attributes()
import onmt_mirror.registration as registration
after = attributes()
print("\n".join(sorted(registration.patching.Patch(owners[i], k, "", "").what
                       for i, k in set(before) | set(after)
                       if before.get((i, k), before) is not after.get((i, k), before))))
"""


def design_table():
    with open(DESIGN, encoding="utf-8") as f:
        lines = f.read().split(HEADING, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return "\n".join(lines[start:end])


def test_design_md_table_is_the_list_of_patches():
    assert design_table() == registration.table(), (
        "docs/design.md's table differs from registration.PATCHES: regenerate it with "
        "the command in onmt_mirror/registration/patching.py")


def test_every_attribute_the_plugin_changes_is_declared():
    out = subprocess.run([sys.executable, "-c", CHANGED],
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, ONMT_MIRROR_DISABLE="1"))
    assert out.returncode == 0, out.stderr
    attributes = {p.what for p in registration.PATCHES
                  if p.what.startswith("onmt.") and hasattr(p.owner, p.name)}
    assert set(out.stdout.split()) == attributes


def test_each_attribute_is_replaced_once_and_keeps_the_stock_one():
    whats = [p.what for p in registration.PATCHES]
    assert len(whats) == len(set(whats))
    assert registration.original(onmt.trainer, "LossCompute").__name__ == "LossCompute"
    with pytest.raises(RuntimeError, match="replaced twice"):
        replaces(onmt.trainer, "LossCompute", why="a second layer")(object)
    assert onmt.trainer.LossCompute.__name__ == "LossComputeFactory"
