"""`python -m onmt_mirror.evaluate`: the automatic metrics table (see automatic.py)."""
from .automatic import main
from .inputs import run_cli

raise SystemExit(run_cli("onmt_mirror.evaluate", main))
