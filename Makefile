# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-all test-fast lint docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dgmm run configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q -m "not long" --durations=15

# everything, the longest fault tests included (about 5 minutes more)
test-all: $(STAMP)
	$(PY) -m pytest -q

# only the tests `make test` leaves out for time (CI runs them after it)
test-long: $(STAMP)
	$(PY) -m pytest -q -m long --durations=5

# the tests without real processes, command-line runs and whole pipelines (under 2 minutes)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# the documentation site, its gallery executed, warnings as errors: docs/_build/html
DOCS_STAMP := $(VENV)/.docs-stamp
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	MPLBACKEND=Agg $(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) demo-output docs/_build docs/auto_examples docs/generated
