# router-stream: the two commands that matter are `make demo` and `make test`.
# Both work from a clean clone: they create .venv, install the package with its test extras,
# and fetch Apache Kafka jars from Maven Central (deploy/local-kafka/fetch.sh).

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

.PHONY: demo test unit bench chaos kafka-jars install clean

$(BIN)/.installed: pyproject.toml
	@test -n "$(PYTHON)" || { echo "need Python >= 3.11 on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

install: $(BIN)/.installed

kafka-jars:
	@bash deploy/local-kafka/fetch.sh $(KAFKA_VERSION) >/dev/null

## run the embedded demo: local broker, two loopback models, a worker, sample traffic, a summary
demo: install kafka-jars
	$(BIN)/router-stream demo

## the demo with a real LLM: SmolLM2-135M (llama.cpp, built once into .cache/llm: ~10 min) as the cheap candidate
.PHONY: demo-real
demo-real: install kafka-jars
	$(BIN)/python -m router_stream.devtools.real_llm demo

## run the whole test suite against a real broker (KAFKA_BOOTSTRAP_SERVERS, Docker, or local jars)
test: install kafka-jars
	$(BIN)/pytest -q -p no:cacheprovider

unit: install
	$(BIN)/pytest -q tests/unit

bench: install kafka-jars
	$(BIN)/python -m bench

chaos: install kafka-jars
	$(BIN)/python bench/chaos.py --records 100000 --workers 3 --partitions 12 --kills 20 --broker-restarts 2 --rate 400

clean:
	rm -rf $(VENV) .state .pytest_cache
