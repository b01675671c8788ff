# The two Quickstart commands (`make run`, `make test`) and the install they share.
# Only Python 3.11+ is assumed; uv is bootstrapped into .venv and installs from uv.lock.
PYTHON ?= python3
VENV := .venv
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
# Installed packages get their bytecode at install time: where PYTHONDONTWRITEBYTECODE is set
# (as on our CI machines), every process would otherwise compile SQLAlchemy, FastAPI and the rest
# from source at each start, and the test suite starts hundreds of them.
export UV_COMPILE_BYTECODE := 1

# Tests run on both cores (pytest-xdist); conftest puts the tests with real processes first.
PYTEST_PARALLEL ?= -n 2

.PHONY: install install-dev compile run test test-fast lint format bench clean

# `install` is the runtime alone (what `make run` needs); `install-dev` adds the test and lint
# tools of the `dev` dependency group. `--inexact` keeps what the other one installed.
install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

$(UV):
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --inexact --no-default-groups --python $(VENV)/bin/python
	@touch $@

$(VENV)/.installed-dev: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --inexact --python $(VENV)/bin/python
	@touch $@ $(VENV)/.installed

run: install
	$(VENV)/bin/agenthub serve

# The project's own bytecode too (py_compile writes it whatever PYTHONDONTWRITEBYTECODE says).
compile: install-dev
	@$(VENV)/bin/python -m compileall -q -j 0 src tests

test: compile
	$(VENV)/bin/pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

# The edit-run loop: everything but the tests that start real hub and Redis processes.
test-fast: compile
	$(VENV)/bin/pytest $(PYTEST_PARALLEL) -m "not multiprocess" $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy src

format: install-dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# All of bench/ (about 6 minutes); one part: make bench BENCH_ARGS="--only inbox".
bench: install
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
