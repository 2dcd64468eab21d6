"""Settings of one embedding replica, read from EMBED_* environment variables."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmorch_common.constants import (
    EMBED_METRICS_PORT,
    EMBED_PORT,
    EMBEDDING_MODEL_ID,
    ORCHESTRATOR_INTERNAL_PORT,
    TEMPORAL_ADDRESS,
    TEMPORAL_NAMESPACE,
)
from llmorch_common.validation import MAX_EMBED_TEXT_CHARS, MAX_EMBED_TEXTS


class EmbedSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBED_")

    model_id: str = Field(
        default=EMBEDDING_MODEL_ID, min_length=1, description="Model id; names the queue embedding.<id>"
    )
    model_name: str = Field(default="all-MiniLM-L6-v2", min_length=1, description="Display name in listings")
    model_path: str = Field(
        default="data/models/minilm-l6-v2.gguf", min_length=1, description="GGUF file; made on first start"
    )
    host: str = Field(default="0.0.0.0", description="Address the gRPC server binds")
    advertise_host: str = Field(default="localhost", description="Host other processes use to reach this replica")
    port: int = Field(default=EMBED_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    metrics_port: int = Field(default=EMBED_METRICS_PORT, ge=0, le=65535, description="Prometheus port; 0 disables")
    temporal_address: str = Field(default=TEMPORAL_ADDRESS, description="Temporal frontend host:port")
    temporal_namespace: str = Field(default=TEMPORAL_NAMESPACE, min_length=1, description="Temporal namespace")
    registry_address: str = Field(
        default=f"localhost:{ORCHESTRATOR_INTERNAL_PORT}",
        description="RegistryService; empty: none",
    )
    max_batch: int = Field(
        default=MAX_EMBED_TEXTS, ge=1, le=4096, description="Most texts per Embed call; more is INVALID_ARGUMENT"
    )
    max_text_chars: int = Field(
        default=MAX_EMBED_TEXT_CHARS,
        ge=1,
        le=1_000_000,
        description="Longest text, in characters; more is INVALID_ARGUMENT",
    )
    max_tokens: int = Field(
        default=256, ge=2, le=512, description="Tokens per text incl. [CLS]/[SEP]; longer texts are truncated"
    )
    batch_tokens: int = Field(
        default=512, ge=256, le=8192, description="Tokens per llama.cpp decode; must hold one whole text"
    )
    batch_sequences: int = Field(
        default=8, ge=1, le=256, description="Texts per llama.cpp decode; 8 measured fastest on CPU"
    )
    n_threads: int = Field(default=2, ge=1, le=256, description="llama.cpp threads")
    priority: int = Field(default=0, ge=-1000, le=1000, description="Router priority among embedding models")
    default_flag: bool = Field(default=True, description="Register as the default embedding model")
    worker_concurrency: int = Field(
        default=4, ge=1, le=64, description="Concurrent embed activities; the engine serialises them"
    )
    drain_timeout_s: float = Field(default=10.0, ge=0, le=600, description="Grace for in-flight calls on SIGTERM")

    @property
    def heartbeat_interval_s(self) -> float:
        """Not a setting: embedding load is not routed on, so a heartbeat a second only keeps the registration alive."""
        return 1.0
