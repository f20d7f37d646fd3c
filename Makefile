# dspex-jobs developer commands. Each target installs what it needs on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test faults lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,neural,embedded]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/dspex-jobs demo

test: $(STAMP)
	$(BIN)/pytest --cov=dspex_jobs --cov-report=term $(PYTEST_ARGS)

# The fault tests at the sizes the resilience issue names (CI runs them small in `make test`).
faults: $(STAMP)
	DSPEX_TEST_FAULT_JOBS=300 DSPEX_TEST_CHAOS_JOBS=500 $(BIN)/pytest tests/faults -s -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy dspex_jobs

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
