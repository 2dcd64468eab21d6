"""What an embedding replica plugs into the shared lifecycle: EmbeddingService, MiniLM and the embed worker."""

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
from llmorch.internal.v1 import metadata_pb2
from llmorch.v1 import types_pb2
from temporalio.client import Client
from temporalio.worker import Worker

from embed_svc.config import EmbedSettings
from embed_svc.engine import EmbeddingEngine
from embed_svc.gguf_convert import ensure_minilm_gguf
from embed_svc.server import EmbeddingServicer, register
from embed_svc.worker import EmbedActivities, create_worker
from llmorch_common.constants import embedding_task_queue
from llmorch_common.replica import Replica, ReplicaIdentity, file_digest


def identity(settings: EmbedSettings) -> ReplicaIdentity:
    return ReplicaIdentity(
        model_id=settings.model_id,
        model_name=settings.model_name,
        model_type=types_pb2.MODEL_TYPE_EMBEDDING,
        priority=settings.priority,
        default_flag=settings.default_flag,
        # One llama.cpp context serialises every call, so one replica never promises more than one at a time.
        max_concurrency=1,
        context_limit=settings.max_tokens,
        gpu=False,
        task_queue=embedding_task_queue(settings.model_id),
    )


def load_engine(settings: EmbedSettings) -> EmbeddingEngine:
    """Blocking: converts the weights on first start, then loads them."""
    path = ensure_minilm_gguf(Path(settings.model_path))
    return EmbeddingEngine(
        path, settings.max_tokens, settings.batch_tokens, settings.batch_sequences, settings.n_threads
    )


class EmbedApp:
    """EmbeddingService over one MiniLM context, and the worker whose `embed` activity calls it."""

    def __init__(self, settings: EmbedSettings) -> None:
        self.settings = settings
        self.identity = identity(settings)
        self.servicer = EmbeddingServicer(metadata_pb2.ModelMetadata(), settings.max_batch, settings.max_text_chars)
        self._activities: EmbedActivities | None = None

    def add_servicers(self, server: grpc.aio.Server) -> list[str]:
        return register(server, self.servicer)

    def set_metadata(self, metadata: metadata_pb2.ModelMetadata) -> None:
        self.servicer.metadata = metadata

    async def load(self, load_changed: Callable[[], None]) -> str:
        self.servicer.engine = await asyncio.to_thread(load_engine, self.settings)
        # The GGUF exists once the engine loaded (converted on first start), so this only locates it.
        return await asyncio.to_thread(file_digest, ensure_minilm_gguf(Path(self.settings.model_path)))

    def in_flight(self) -> int:
        """Embedding load is not routed on, so the heartbeat reports none; it keeps the registration alive."""
        return 0

    def create_worker(self, client: Client, endpoint: str, task_queue: str) -> Worker:
        self._activities = EmbedActivities(endpoint, self.settings.max_batch)
        return create_worker(
            client, task_queue, self._activities, self.settings.worker_concurrency, self.settings.drain_timeout_s
        )

    async def worker_drained(self) -> None:
        if self._activities:
            await self._activities.close()

    def close(self) -> None:
        if self.servicer.engine is not None:
            self.servicer.engine.close()


class EmbedReplica(Replica[EmbedApp]):
    """One embedding replica: the shared lifecycle around an EmbedApp."""

    def __init__(self, settings: EmbedSettings) -> None:
        super().__init__(settings, EmbedApp(settings))
