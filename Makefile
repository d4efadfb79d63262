# make run        - set up (first time) and serve the gateway with the demo data
# make test       - set up (first time) and run every test
# make test-fast  - the unit tests only: no sockets, processes or real time
# make test-deps  - the external programs some tests drive (sipp, Chromium), from Debian's packages
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The tests' PostgreSQL comes from the pgserver wheel (test extras) unless TEST_PG_URL is set; Debian's
# postgresql is for bench/bench_workers.py's cluster (bench/pgcluster.py)
TEST_DEBS := sip-tester chromium chromium-driver fonts-noto-cjk postgresql
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: setup run test test-fast test-deps bench lint clean

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

test-deps:
	@missing=$$(for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then echo "test programs already installed ($(TEST_DEBS))"; exit 0; fi; \
	echo "installing" $$missing; \
	$(SUDO) apt-get update -qq && \
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null

bench: setup
	$(BIN)/python -m bench.run_all

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf var bench/out test-artifacts .pytest_cache
