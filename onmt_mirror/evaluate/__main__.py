"""`python -m onmt_mirror.evaluate`: the automatic metrics table (see automatic.py)."""
from onmt_mirror.errors import run_command

from .automatic import main

raise SystemExit(run_command("onmt_mirror.evaluate", main))
