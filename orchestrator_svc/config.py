"""Settings of the orchestrator API and worker, read from ORCH_* environment variables."""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmorch_common.constants import (
    EMBED_PORT,
    EMBEDDING_MODEL_ID,
    ORCHESTRATOR_API_SDK_METRICS_PORT,
    ORCHESTRATOR_HTTP_PORT,
    ORCHESTRATOR_INTERNAL_PORT,
    ORCHESTRATOR_METRICS_PORT,
    ORCHESTRATOR_PORT,
    ORCHESTRATOR_TASK_QUEUE,
    ORCHESTRATOR_WORKER_METRICS_PORT,
    ORCHESTRATOR_WORKER_SDK_METRICS_PORT,
    TEMPORAL_ADDRESS,
    TEMPORAL_NAMESPACE,
    embedding_task_queue,
)


class OrchestratorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORCH_")

    host: str = Field("0.0.0.0", description="Address the API binds")
    port: int = Field(ORCHESTRATOR_PORT, ge=0, le=65535, description="Public API gRPC port; 0 picks a free one")
    http_port: int = Field(
        ORCHESTRATOR_HTTP_PORT,
        ge=-1,
        le=65535,
        description="OpenAI-compatible HTTP port (public, behind Envoy's /v1/); 0 picks a free one, -1 disables",
    )
    internal_host: str = Field(
        "0.0.0.0", description="Address the internal listener binds (RegistryService); NetworkPolicies guard it"
    )
    internal_port: int = Field(
        ORCHESTRATOR_INTERNAL_PORT,
        ge=0,
        le=65535,
        description="Internal gRPC port: RegistryService, admitting only the registration credential; 0 picks one",
    )
    key_cache_ttl_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="A verified API key is trusted this long without a database read: the bound on how long a "
        "revoked key keeps working on an API replica",
    )
    metrics_port: int = Field(ORCHESTRATOR_METRICS_PORT, ge=0, le=65535, description="API Prometheus port; 0 disables")
    worker_metrics_port: int = Field(
        ORCHESTRATOR_WORKER_METRICS_PORT, ge=0, le=65535, description="Worker Prometheus port; 0 disables"
    )
    temporal_metrics_port: int = Field(
        ORCHESTRATOR_WORKER_SDK_METRICS_PORT, ge=0, le=65535, description="Worker's Temporal SDK metrics; 0 disables"
    )
    api_temporal_metrics_port: int = Field(
        ORCHESTRATOR_API_SDK_METRICS_PORT, ge=0, le=65535, description="API's Temporal SDK metrics; 0 disables"
    )
    temporal_address: str = Field(TEMPORAL_ADDRESS, description="Temporal frontend host:port")
    temporal_namespace: str = Field(TEMPORAL_NAMESPACE, description="Temporal namespace")
    task_queue: str = Field(ORCHESTRATOR_TASK_QUEUE, description="Queue of workflows and control-plane activities")
    database_url: str = Field(
        "sqlite:///data/registry.db",
        pattern=r"^(sqlite:///|postgres(ql)?://)",
        description="The registry's database: sqlite:///relative/file.db or sqlite:////absolute/file.db for one API "
        "replica, postgresql://user:password@host:port/db for several (they share it and follow each other's changes)",
    )
    registry_load_ttl_s: float = Field(
        5.0, gt=0, le=600, description="A replica's in-flight count not renewed by a heartbeat this long reads as 0"
    )
    registry_sync_interval_s: float = Field(
        2.0, gt=0, le=600, description="Bound on how stale this replica's registry cache gets if a notification is lost"
    )
    registry_stale_after_s: float = Field(
        300.0, gt=0, le=86400, description="A replica down and without heartbeats this long is removed"
    )
    registry_address: str = Field(
        f"localhost:{ORCHESTRATOR_INTERNAL_PORT}", description="Where the worker reaches the registry (internal port)"
    )
    request_timeout_s: float = Field(900.0, gt=0, le=86400, description="Workflow execution timeout of one request")
    generate_timeout_s: float = Field(300.0, gt=0, le=3600, description="start-to-close bound of one generation")
    heartbeat_timeout_s: float = Field(5.0, gt=0, le=600, description="A silent generation is presumed dead after this")
    saturation_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Queue wait that counts as saturated (a model's, or the query's embedding)"
    )
    generate_attempts: int = Field(2, ge=1, le=10, description="Temporal attempts per model before falling back")
    max_selections: int = Field(4, ge=1, le=20, description="Models tried per request before UNAVAILABLE")
    workflow_sandbox: bool = Field(
        False,
        description="Run workflows in Temporal's sandbox; off saves its per-run re-import (docs/benchmarks), and the "
        "replay tests still replay every committed history in the sandbox",
    )
    api_embedded_worker: bool = Field(
        True, description="The API also runs a worker, for eager workflow start; the worker process adds capacity"
    )
    result_via_update: bool = Field(
        False,
        description="Unary requests start with update-with-start and return when the result is recorded, instead of "
        "eager start and the run's result (an A/B in the bench, ADR 0019)",
    )
    max_in_flight: int = Field(
        1000, ge=1, le=1_000_000, description="Requests this API replica waits on at once; more get RESOURCE_EXHAUSTED"
    )
    vector_store: Literal["memory", "sqlite", "lancedb", "postgres"] = Field(
        "lancedb",
        description="memory works only when API and worker share a process (tests); sqlite and lancedb need one "
        "disk for API and workers; postgres keeps vectors and staged documents in database_url, for any number of "
        "API replicas and workers",
    )
    vector_path: Path = Field(Path("data/vectors"), description="LanceDB directory, or the SQLite file for sqlite")
    staging_db: Path = Field(Path("data/ingestion.db"), description="SQLite file documents wait in during ingestion")
    redis_url: str = Field(
        "",
        pattern=r"^(rediss?://.*)?$",
        description="redis://host:port/db turns on the cache of deterministic completions and of embeddings; empty: "
        "no cache. An unreachable Redis reads as a miss, never as an error",
    )
    cache_ttl_s: float = Field(3600.0, gt=0, le=30 * 86400, description="How long a cached completion is kept")
    embedding_address: str = Field(f"localhost:{EMBED_PORT}", description="EmbeddingService for ingestion and Query")
    retrieval_mode: Literal["dense", "keyword", "hybrid"] = Field(
        "dense",
        description="How Query (when the request names no mode) and RAG requests score chunks; dense has the best "
        "MRR on the public questions, the only ones tuning may use (docs/benchmarks/rag_quality.md)",
    )
    embedding_task_queue: str = Field(
        embedding_task_queue(EMBEDDING_MODEL_ID), description="Queue of the embed activity for RAG requests"
    )
