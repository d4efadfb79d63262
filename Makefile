# make run   - set up (first time) and serve the gateway with the demo data
# make test  - set up (first time) and run every test
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast bench lint clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "python3.11 not found: install Python 3.11 (e.g. apt-get install python3.11 python3.11-venv)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: setup
	$(BIN)/python run_gateway.py serve --demo

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not integration and not slow"

bench: setup
	$(BIN)/python -m bench.run_all

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf var bench/out test-artifacts .pytest_cache
