# Two commands set up everything on a machine with only Python 3.11, git and make:
#   make repro   creates .venv, installs the pinned dependencies, runs the pipeline (dvc repro)
#   make test    same set-up if needed, then the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed

# Stage commands (`trackvision ...`) and dvc/mlflow come from the venv; neither DVC nor MLflow
# phones home (MLFLOW_DISABLE_TELEMETRY=false in the environment turns MLflow's back on).
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
MLFLOW_DISABLE_TELEMETRY ?= true
export MLFLOW_DISABLE_TELEMETRY
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup system repro test test-fast ui bench lint format clean help

help:
	@echo "make repro | make test | make test-fast | make ui | make bench | make lint | make clean"

# Re-runs only when the dependency pins change, so a second `make` installs nothing.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint requirements.lock --editable '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Programs some tests drive for real: Chromium (the MLflow UI in a browser) and PostgreSQL
# (a team's tracking server). Installed with apt where we may; elsewhere those tests skip and say why.
SYSTEM_PACKAGES := chromium postgresql
SYSTEM_STAMP := $(VENV)/.system
$(SYSTEM_STAMP):
	@if command -v chromium >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  touch $@; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $(SYSTEM_PACKAGES) with apt-get"; \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES) >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(SYSTEM_PACKAGES) >/dev/null 2>&1; }; } && \
	  touch $@ || echo "could not install $(SYSTEM_PACKAGES): the browser and PostgreSQL tests will skip"; \
	else \
	  echo "not root or no apt-get: install $(SYSTEM_PACKAGES) yourself, or those tests skip"; \
	fi

system: $(SYSTEM_STAMP)

repro: setup
	dvc repro

# Every core (pytest-xdist); tests that share a fixture run on one worker (tests/conftest.py).
TEST_WORKERS ?= auto
test: setup system
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

# The unit tests: no pipeline in a copy of the repo, no servers (the loop while changing code).
test-fast: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not integration" --ignore=tests/integration

# The MLflow UI over this project's store, artifacts served, on 127.0.0.1 (make ui PORT=5001).
PORT ?= 5000
ui: setup
	trackvision ui --port $(PORT)

bench: setup
	$(BIN)/python benchmarks/data_stages.py
	$(BIN)/python benchmarks/text_recognition_build.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/predict.py --if-trained
	$(BIN)/python benchmarks/serving.py --if-registered
	$(BIN)/python benchmarks/near_duplicates.py
	$(BIN)/python benchmarks/scale.py
	@echo "benchmarks/experiment_queue.py (about 16 min here) needs the outputs pushed: dvc push first"

lint: setup
	ruff check src tests benchmarks
	ruff format --check src tests benchmarks

format: setup
	ruff check --fix src tests benchmarks
	ruff format src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
