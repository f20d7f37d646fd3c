# dspex-jobs developer commands. Each target installs what it needs on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test faults lint bench load docs clean

$(STAMP): pyproject.toml constraints.txt setup.py dspex_jobs/protocol/_table_c.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,neural,embedded,optimizer]'
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
	$(BIN)/ruff format --check .
	$(BIN)/mypy dspex_jobs
	$(BIN)/bandit -q -c pyproject.toml -r dspex_jobs

# Every bench/*.py (each against a baseline measured in the same run); results go to
# bench/results.json and the table in docs/benchmarks.md. `make bench BENCH=cache` runs one.
bench: $(STAMP)
	$(BIN)/python bench/_collect.py $(BENCH)

# The load test at full size: 10,000 mixed jobs from 4 producer processes (CI runs it small).
load: $(STAMP)
	DSPEX_TEST_LOAD_JOBS=10000 DSPEX_TEST_LOAD_PRODUCERS=4 $(BIN)/pytest tests/performance -s -p no:cacheprovider

# Regenerate docs/api_reference.md from docstrings, then run every example in README.md and docs/.
docs: $(STAMP)
	$(BIN)/python docs/gen_api_reference.py
	$(BIN)/pytest tests/integration/test_docs_examples.py tests/unit/test_docs_reference.py -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
