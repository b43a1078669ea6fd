# Kaiwa developer commands. `make run` and `make test` work on a fresh machine
# with only Python 3.11+ installed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help run test check format bench bench-quick superuser clean

help:
	@echo "make run          start Kaiwa on http://$(HOST):$(PORT) (SQLite, embedded Redis, DEBUG on)"
	@echo "make test         run the whole test suite (starts its own Redis)"
	@echo "make check        ruff lint + format check, mypy"
	@echo "make bench        full benchmark, Kaiwa vs Django Channels (writes docs/performance.md)"
	@echo "make bench-quick  one-minute benchmark smoke run"
	@echo "make superuser    create an admin account"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Kaiwa needs Python 3.11 or newer: run make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@ $(VENV)/.installed-run

$(VENV)/.installed-bench: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,bench]'
	@touch $@ $(VENV)/.installed-dev $(VENV)/.installed-run

run: $(VENV)/.installed-run
	DEBUG=$${DEBUG-1} $(BIN)/python manage.py migrate --noinput
	DEBUG=$${DEBUG-1} $(BIN)/uvicorn project.asgi:application --host $(HOST) --port $(PORT) \
		--ws-per-message-deflate false --ws-max-size 65536 --lifespan on

superuser: $(VENV)/.installed-run
	DEBUG=$${DEBUG-1} $(BIN)/python manage.py createsuperuser

# axe-core (tests/browser/test_accessibility.py) comes from the npm registry, pinned in tests/js.
tests/js/node_modules/axe-core/axe.min.js: tests/js/package.json tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --prefix tests/js --no-audit --no-fund --silent && touch $@; \
	else echo "npm not found: the accessibility test needs axe-core (Debian: apt-get install npm, then make test)"; fi

test: $(VENV)/.installed-dev tests/js/node_modules/axe-core/axe.min.js
	$(BIN)/pytest $(PYTEST_ARGS)
	@if command -v node >/dev/null 2>&1; then node --test tests/js/; \
	else echo "JS unit tests (tests/js/) not run: they need Node.js 18+ on PATH (Debian: apt-get install nodejs)."; fi

check: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DEBUG=1 $(BIN)/mypy .

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The load generator is Node.js (`ws`): installed from the committed lock file.
NODE_LOADGEN := bench/loadgen-node
$(NODE_LOADGEN)/node_modules/.package-lock.json: $(NODE_LOADGEN)/package.json $(NODE_LOADGEN)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm is missing: the bench's load generator needs Node.js and npm (Debian: apt-get install nodejs npm)"; exit 1; }
	cd $(NODE_LOADGEN) && npm ci --no-audit --no-fund --loglevel=error

bench: $(VENV)/.installed-bench $(NODE_LOADGEN)/node_modules/.package-lock.json
	$(BIN)/python -m bench run --full

bench-quick: $(VENV)/.installed-bench $(NODE_LOADGEN)/node_modules/.package-lock.json
	$(BIN)/python -m bench run --quick

clean:
	rm -rf $(VENV) .kaiwa .pytest_cache .mypy_cache .ruff_cache staticfiles
