# textgen: make install | test | test-compose | demo | bench | base-model | up | down | logs | status | proto | clean
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test test-compose demo bench base-model proto up down logs status clean gpu-check

install: $(STAMP)

# Reinstall only when the dependency list changes; a second `make install` does nothing.
$(STAMP): pyproject.toml
	@command -v redis-server >/dev/null 2>&1 || ./deploy/local/install-redis.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

proto: install
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. proto/textgen/v1/textgen.proto

# Test modules run in parallel, one module to a worker (tests/parallel.py); TEST_WORKERS=0 runs them in one process.
# Three workers on two cores: much of the suite waits on servers, workers and a browser (measured: 2 workers
# 506 s of suite, 3 workers 477 s, same tree, same machine).
TEST_WORKERS ?= 3

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# docker-compose.yml in a real Docker engine (installed and started here if the machine has none), as root.
test-compose: install
	./tests/compose/run.sh

# The benches also need matplotlib (the training bench's plot): the `bench` extra, installed once.
bench: install $(VENV)/.bench-installed
	@./deploy/local/install-nginx.sh || echo "bench: no nginx: the capacity bench will say so"
	$(PY) -m bench

$(VENV)/.bench-installed: pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $@

# Retrain the shipped base model (trainer/base/english) from scratch with its recorded recipe, on
# nietzsche.txt and tinyshakespeare.txt from BASE_CORPORA (their sha256 checked): about 35 minutes on 2 cores.
BASE_CORPORA ?= ../shared/corpora
base-model: install
	$(PY) -m trainer base-model --corpora $(BASE_CORPORA)

demo: install
	./deploy/local/demo.sh

up: install
	./deploy/local/stack.sh up

down:
	./deploy/local/stack.sh down

logs:
	./deploy/local/stack.sh logs $(ARGS)

status:
	./deploy/local/stack.sh status

clean:
	-./deploy/local/stack.sh down
	rm -rf $(VENV) var

# On a machine with an NVIDIA GPU (and `.venv/bin/pip install -e '.[gpu]'`): train with --gpu, check the
# cuDNN kernel, decode with 1 and 256 streams, score a text; writes bench/results/gpu.md beside the CPU's figures.
gpu-check: install
	$(PY) -m bench.gpu_check
