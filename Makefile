# `make demo`: fresh machine -> .venv with everything -> the bundled demo end to end.
# `make test`: the test suite (what .ci/run calls). Both are idempotent.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: venv demo test results clean

venv: $(STAMP)

# torch first (pinned CPU wheel on CPU machines; an existing torch>=2.4 is kept), then
# OpenNMT-py with --no-deps (its metadata pins torch<2.3), then this package.
$(STAMP): setup.py requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q --no-deps opennmt-py==3.5.1
	$(PIP) install -q -e ".[eval,server]" -r requirements-dev.txt
	touch $(STAMP)

demo: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash examples/demo/run.sh

test: $(STAMP)
	$(PY) -m pytest -q tests

# docs/results.md: every system on DailyDialog from prepared data (a 4-GPU host;
# BUDGET = training seconds per system), then the evaluator over the predictions.
BUDGET ?= 330
results: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash results/run_dailydialog.sh data/dailydialog run/results $(BUDGET)

clean:
	rm -rf $(VENV) run
