# vledger: `make run` starts what exists and shows it working; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= run

.PHONY: help install test lint run bench soak clean

help:
	@echo "make run    - build a local ledger, append records, verify it, print the result"
	@echo "make test   - install into .venv and run the whole test suite"
	@echo "make lint   - ruff and mypy (strict)"
	@echo "make bench  - print every benchmark figure beside its ceiling"
	@echo "make soak   - the long fault runs that CI does not have time for"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# mypy must see the code under its import name, vledger, whatever this folder is called:
# a symlink gives it that name without moving the folders.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	mkdir -p $(VENV)/typecheck && ln -sfn "$(CURDIR)" $(VENV)/typecheck/vledger
	cd $(VENV)/typecheck && "$(CURDIR)/$(BIN)/mypy" --config-file "$(CURDIR)/pyproject.toml" \
		-p vledger.node -p vledger.config -p vledger.tools -p vledger.bench -p vledger.ingest -p vledger.broker

run: $(STAMP)
	$(BIN)/vledger demo --store $(RUN_DIR)/demo

bench: $(STAMP)
	$(BIN)/python -m bench

# 500 kill -9 rounds of the crash test (about two minutes) instead of CI's 25.
soak: $(STAMP)
	VLEDGER_CRASH_ROUNDS=500 $(BIN)/python -m pytest tests/integration/test_crash.py -q

clean:
	rm -rf $(VENV) $(RUN_DIR) .pytest_cache .mypy_cache .ruff_cache
