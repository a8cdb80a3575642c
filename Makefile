# `make demo`: fresh machine -> .venv with everything -> the bundled demo end to end.
# `make test`: the test suite (what .ci/run calls). Both are idempotent.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: venv demo test results clean

venv: $(STAMP)

# torch first (pinned CPU wheel on CPU machines; an existing torch>=2.4 is kept), then this
# package with OpenNMT-py's runtime needs and every extra, then OpenNMT-py itself with
# --no-deps, last: its metadata pins torch<2.3, and pip checks the pins of what is already
# installed, so in this order its resolver has nothing to report. (On a re-install
# OpenNMT-py is there already; --no-warn-conflicts keeps that one known pin quiet.)
ONMT_THERE := $(PY) -c "import importlib.metadata as m; m.version('opennmt-py')" 2>/dev/null

$(STAMP): setup.py requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q $$($(ONMT_THERE) && echo --no-warn-conflicts) \
	    -e ".[eval,server,tb]" -r requirements-dev.txt
	$(PIP) install -q --no-deps opennmt-py==3.5.1
	@echo "OpenNMT-py 3.5.1 installed with --no-deps on purpose: it pins torch<2.3, and runs on this torch (setup.py)"
	touch $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash examples/demo/run.sh

# a worker per core (at most 4), a test module per worker: the tests are single-threaded
# CLI runs and tiny models (tests/conftest.py), so 2 cores take about half the time of 1
test: $(STAMP)
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile tests

# docs/results.md: every system on DailyDialog from prepared data, side by side on one GPU
# (results/comparison.yaml), then docs/results.md's evaluator commands.
results: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(PY) results/run.py results/comparison.yaml \
		--work run/comparison --out run/comparison/out

clean:
	rm -rf $(VENV) run
