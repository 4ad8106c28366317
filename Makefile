# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-all test-fast lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dgmm run configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q -m "not long" --durations=15

# everything, the longest fault tests included (about 3 minutes more)
test-all: $(STAMP)
	$(PY) -m pytest -q

# only the tests `make test` leaves out for time (CI runs them after it)
test-long: $(STAMP)
	$(PY) -m pytest -q -m long --durations=5

# the tests without real processes, command-line runs and whole pipelines (under 2 minutes)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) demo-output
