"""Settings of one model replica, read from MODEL_* environment variables."""

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmorch_common.constants import (
    DEFAULT_MODEL_ID,
    MODEL_BASE_METRICS_PORT,
    MODEL_BASE_PORT,
    ORCHESTRATOR_INTERNAL_PORT,
    TEMPORAL_ADDRESS,
    TEMPORAL_NAMESPACE,
)


class ModelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODEL_")

    model_id: str = Field(DEFAULT_MODEL_ID, description="Catalog id of the model; names the task queue llm.<id>")
    model_name: str = Field("", description="Display name; empty takes the catalog's")
    engine: Literal["llama", "fake"] = Field("llama", description="llama = real llama.cpp; fake = deterministic timing")
    model_path: str = Field("", description="GGUF file; empty locates it in the model's PyPI package")
    priority: int | None = Field(None, ge=-1000, le=1000, description="Router priority; empty takes the catalog's")
    default_flag: bool | None = Field(None, description="Register as the default LLM; empty takes the catalog's")
    max_concurrency: int = Field(1, ge=1, le=64, description="Generations at once: one llama.cpp context each")
    context_limit: int = Field(2048, ge=64, le=131072, description="Context window in tokens (n_ctx)")
    hardware_type: Literal["cpu", "gpu"] = Field("cpu", description="gpu offloads every layer (n_gpu_layers=-1)")
    n_threads: int = Field(2, ge=1, le=256, description="llama.cpp threads per context")
    host: str = Field("0.0.0.0", description="Address the gRPC server binds")
    advertise_host: str = Field("localhost", description="Host other processes use to reach this replica")
    port: int = Field(MODEL_BASE_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(MODEL_BASE_METRICS_PORT, ge=0, le=65535, description="Prometheus port; 0 disables")
    temporal_address: str = Field(TEMPORAL_ADDRESS, description="Temporal frontend host:port")
    temporal_namespace: str = Field(TEMPORAL_NAMESPACE, description="Temporal namespace")
    registry_address: str = Field(
        f"localhost:{ORCHESTRATOR_INTERNAL_PORT}", description="RegistryService (the API's internal port); empty skips"
    )
    heartbeat_interval_s: float = Field(1.0, gt=0, le=60, description="Registry heartbeat period")
    stream_flush_interval_s: float = Field(
        0.25,
        gt=0,
        le=5,
        description="A stream's tokens reach the workflow in one signal per interval (the first at once): shorter "
        "is smoother, longer costs the control plane fewer workflow tasks; against 0.1 s, 0.25 s halved the "
        "control plane's CPU per stream and let llama.cpp decode faster on 2 cores (docs/benchmarks/flush.md)",
    )
    admission_timeout_s: float = Field(
        30.0, ge=0, le=600, description="Wait for a free context before RESOURCE_EXHAUSTED"
    )
    drain_timeout_s: float = Field(30.0, ge=0, le=600, description="Grace for in-flight generations on SIGTERM")
    fake_first_token_ms: float = Field(20.0, ge=0, description="Fake engine: delay before the first token")
    fake_token_ms: float = Field(2.0, ge=0, description="Fake engine: delay between tokens")
