# Quick start: `make run` (set up, then run the main job) and `make test` (set up, then
# lint, type-check and run every test).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
export HF_HUB_OFFLINE := 1

.PHONY: setup setup-dev run demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# llama-cpp-python builds from source for this CPU first (AMX or AVX2; see the script).
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt scripts/install-llama-cpp.sh
	scripts/install-llama-cpp.sh $(BIN)/python
	$(PIP) install -c constraints.txt -e .
	touch $@

# LiteGraph (the canvas library) comes from npm, pinned by static/package-lock.json.
static/node_modules/.installed: static/package.json static/package-lock.json
	cd static && npm ci --no-audit --no-fund
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed static/node_modules/.installed

setup-dev: setup $(VENV)/.installed-dev

# The main job: the web app on http://127.0.0.1:8080 with the example flows (it prints
# the URL with its token: opening it signs the browser in).
run: setup
	$(BIN)/flowbuilder serve

# The voice memo example from the command line, on the bundled sample.
demo: setup
	$(BIN)/flowbuilder run examples/voice_memo.json --input audio=examples/jfk.ogg

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The tests use real services: Debian's chromium (browser tests) and a PostgreSQL server
# (store tests); both scripts install what is missing and are no-ops when it is there.
# They include schemathesis against a real server's /openapi.json (tests/test_schemathesis.py).
test: lint
	scripts/install-chromium.sh
	eval "$$(scripts/start-postgres.sh)" && $(BIN)/pytest

bench: setup
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) static/node_modules .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
