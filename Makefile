# The two commands of the README: `make demo` and `make test`. Both set up .venv first (seconds when the lock is unchanged).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# TF_USE_LEGACY_KERAS=1 (TFT, TFMA and TFRS need Keras 2) is set by importing mtin_tf, which every entry point, the
# benchmarks and tests/conftest.py do before TensorFlow (mtin_tf/__init__.py).
export TF_CPP_MIN_LOG_LEVEL ?= 2
PYTEST_ARGS ?=

.PHONY: setup demo test lock bench clean

setup:
	@bash scripts/setup_env.sh

# VERBOSE=1: also print the third-party messages mtin filters (mtin --verbose).
demo: setup
	@$(VENV)/bin/mtin $(if $(VERBOSE),--verbose )demo

test: setup
	@$(VENV)/bin/ruff check --quiet . || { echo "make test: ruff found the problems above (ruff.toml)"; exit 1; }
	@$(PY) -m pytest $(PYTEST_ARGS)

# Resolve install_requires + the orchestration and dev extras (not gpu) into the one fully pinned lock, on Python 3.10.
lock:
	@uv --version >/dev/null 2>&1 || { echo "make lock needs a working uv (pip install uv)"; exit 1; }
	uv pip compile --quiet --python-version 3.10 --python-platform x86_64-manylinux_2_31 \
	  --extra orchestration --extra dev -o requirements.lock setup.py

bench: setup
	$(PY) benchmarks/bench_model.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
