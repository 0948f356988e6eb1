# One entry point for people and CI. `make demo` and `make test` do all set-up themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
NEWEST := $(shell scripts/newest-python)
VENV_NEWEST ?= .venv-newest
PIP_FLAGS ?= -q --disable-pip-version-check

.PHONY: setup demo test test-fast test-newest lint typecheck bench bench-trace fmt clean

$(VENV)/.installed: pyproject.toml scripts/system-deps
	scripts/system-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) -U pip
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/tracebox demo

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: setup
	$(VENV)/bin/mypy

fmt: setup
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

# The suite on the main interpreter, then again on the newest Python (3.12+) found here.
test: lint typecheck
	$(PY) -m pytest
	$(MAKE) test-newest

test-fast: setup
	$(PY) -m pytest -x -q

test-newest:
ifeq ($(NEWEST),)
	@echo "no Python >= 3.12 on this machine: the newest-interpreter run is skipped"
else
	@test -x $(VENV_NEWEST)/bin/python || $(NEWEST) -m venv $(VENV_NEWEST)
	$(VENV_NEWEST)/bin/python -m pip install $(PIP_FLAGS) -U pip
	$(VENV_NEWEST)/bin/python -m pip install $(PIP_FLAGS) -e '.[dev]'
	$(VENV_NEWEST)/bin/python -m pytest
endif

# Every benchmark, peers side by side; bench/README.md has the numbers and how to read them.
bench: setup
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev,bench]'
	$(PY) bench/bench_session.py
	$(PY) bench/bench_checkpoint.py
	$(PY) bench/bench_checkpoint.py --huge-pages
	$(PY) bench/bench_journal.py
	$(PY) bench/bench_verify.py
	$(MAKE) bench-trace

# The tracer on both interpreters: settrace on 3.11, sys.monitoring on the newest.
bench-trace: setup
	$(PY) -m pip install $(PIP_FLAGS) -e '.[dev,bench]'
	$(PY) bench/bench_trace.py
ifneq ($(NEWEST),)
	@test -x $(VENV_NEWEST)/bin/python || $(NEWEST) -m venv $(VENV_NEWEST)
	$(VENV_NEWEST)/bin/python -m pip install $(PIP_FLAGS) -e '.[dev,bench]'
	$(VENV_NEWEST)/bin/python bench/bench_trace.py
endif

clean:
	rm -rf $(VENV) $(VENV_NEWEST) .mypy_cache .ruff_cache .pytest_cache
