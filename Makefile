# Everything a fresh machine with only python3 needs: `make run` and `make test` create .venv on demand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench fuzz clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

# Kernels compile once per source version (about a minute), then load from the cache.
run: $(VENV)/.installed
	$(BIN)/python -m engine.precompile --if-needed
	$(BIN)/tickdeck $(ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(VENV)/.installed-test lint
	$(BIN)/python -m engine.precompile --if-needed
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-test
	$(BIN)/tickdeck bench

# Every fuzz test with 20x the examples of `make test`, then the atheris harnesses (Linux x86-64) for
# FUZZ_SECONDS each; prints the inputs tried per decoder.
FUZZ_SECONDS ?= 60
fuzz: $(VENV)/.installed-test
	$(BIN)/python -m tests.fuzz_report --atheris-seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
