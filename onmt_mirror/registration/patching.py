"""How a registration module declares a change to OpenNMT-py, so that PATCHES lists them all.

`replaces` sets an attribute and keeps what it replaced for `original`; `declares` records a
change that replaces no attribute (a registry entry, a call). Each attribute is replaced
once: a second concern extends the one replacement instead of wrapping it again, so no
patch depends on the order of the modules. docs/design.md's table is `table()`:

    python -c "import onmt, onmt_mirror.registration as r; print(r.table())"
"""
import inspect
import os
import sys
from typing import NamedTuple


class Patch(NamedTuple):
    owner: object  # a module or a class
    name: str  # the attribute replaced, or the registry call made on owner
    why: str  # one line: what the stock code lacks
    where: str  # the registration module that declares it

    @property
    def what(self):
        if inspect.ismodule(self.owner):
            return "%s.%s" % (self.owner.__name__, self.name)
        return "%s.%s.%s" % (self.owner.__module__, self.owner.__qualname__, self.name)


PATCHES = []  # in the order applied
_ORIGINALS = {}


def _record(owner, name, why):
    if not why or "\n" in why:
        raise ValueError("%s: give the reason as one line (a table cell)" % name)
    where = os.path.basename(sys._getframe(2).f_globals["__file__"])
    PATCHES.append(Patch(owner, name, why, where))


def declares(owner, name, why):
    """Records a change made by a call rather than by replacing owner.name."""
    _record(owner, name, why)


def replaces(owner, name, why):
    """Decorator: owner.name becomes the decorated object, a classmethod or staticmethod
    again when the stock attribute is one; `original(owner, name)` keeps the stock one."""
    def replace(new):
        if (owner, name) in _ORIGINALS:
            raise RuntimeError("%s is replaced twice: extend the first replacement"
                               % Patch(owner, name, why, "").what)
        stock = inspect.getattr_static(owner, name)
        kind = type(stock) if isinstance(stock, (classmethod, staticmethod)) else None
        _ORIGINALS[owner, name] = stock.__func__ if kind else stock
        setattr(owner, name, kind(new) if kind else new)
        _record(owner, name, why)
        return new

    return replace


def original(owner, name):
    """The stock owner.name (for a classmethod its function: pass cls first)."""
    return _ORIGINALS[owner, name]


def table():
    """docs/design.md's table of every patch, in the order applied."""
    rows = ["| what | in | why |", "|---|---|---|"]
    rows += ["| `%s` | `%s` | %s |" % (p.what, p.where, p.why.replace("|", "\\|"))
             for p in PATCHES]
    return "\n".join(rows)
