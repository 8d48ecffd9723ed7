# Everything a fresh machine with only python3 needs: `make run` and `make test` create .venv on demand
# and install exactly what uv.lock pins, so CI tests the packages users get. uv itself (pinned below) is
# installed from PyPI into .uv/ by the machine's python3; `make lock` moves the pins forward on purpose.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
UV := .uv/bin/uv

# uv installs into .venv with the given interpreter and never downloads a Python of its own.
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never

.PHONY: run test soak lint lock bench fuzz clean

$(UV):
	@echo "tickdeck: installing uv $(UV_VERSION), the installer that builds .venv from uv.lock, into .uv/ (once)"
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install -qq --disable-pip-version-check uv==$(UV_VERSION)

# --locked: stop with a message if pyproject.toml and uv.lock disagree (run `make lock`), never re-resolve.
# `run` keeps extras a previous `make test` installed (--inexact); `test` installs exactly the test set.
# Both install the `exchanges` extra (ccxt, for the ccxt feed) and the `fleet` extra (nats-py, for the
# bus); `pip install tickdeck` installs neither.
$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	@echo "tickdeck: installing the locked dependencies into $(VENV)"
	$(UV) sync --quiet --locked --inexact --extra exchanges --extra fleet --python $(PYTHON)
	touch $@

$(VENV)/.installed-test: pyproject.toml uv.lock | $(UV)
	@echo "tickdeck: installing the locked dependencies and test extras into $(VENV)"
	$(UV) sync --quiet --locked --extra test --extra exchanges --extra fleet --python $(PYTHON)
	touch $@ $(VENV)/.installed

# Kernels compile once per source version (about a minute), then load from the cache. The console does
# that itself, behind its first frame and with its progress on screen (the headless service logs it,
# `indicators` and `backtest` show it on stderr), so `run` opens the window at once.
run: $(VENV)/.installed
	$(BIN)/tickdeck $(ARGS)

# lint-imports checks the layer rules ([tool.importlinter] in pyproject.toml) without running any code.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

test: $(VENV)/.installed-test lint
	$(BIN)/python -m engine.precompile --if-needed
	$(BIN)/python -m pytest -q

# The long variants of the tests (marked soak): the bus away for 30 s, ...
soak: $(VENV)/.installed-test
	$(BIN)/python -m engine.precompile --if-needed
	$(BIN)/python -m pytest -q -m soak

# Move every pin to the newest release pyproject.toml allows, then run `make test` before committing.
lock: | $(UV)
	$(UV) lock --upgrade
	@echo "tickdeck: uv.lock updated; run 'make test' and commit it with the reason for the move"

bench: $(VENV)/.installed-test
	$(BIN)/tickdeck bench

# Every fuzz test with 20x the examples of `make test`, then the atheris harnesses (Linux x86-64) for
# FUZZ_SECONDS each; prints the inputs tried per decoder.
FUZZ_SECONDS ?= 60
fuzz: $(VENV)/.installed-test
	$(BIN)/python -m tests.fuzz_report --atheris-seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) .uv build *.egg-info .pytest_cache .mypy_cache .ruff_cache
