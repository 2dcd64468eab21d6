"""What a model replica plugs into the shared lifecycle: ModelService, llama.cpp contexts and the generate worker."""

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
from llmorch.internal.v1 import metadata_pb2
from llmorch.v1 import types_pb2
from temporalio.client import Client
from temporalio.worker import Worker

from llmorch_common.constants import llm_task_queue
from llmorch_common.replica import Replica, ReplicaIdentity, file_digest
from model_svc.catalog import CATALOG, fallback_entry, locate_weights
from model_svc.config import ModelSettings
from model_svc.engine import Engine, EnginePool, FakeEngine, LlamaEngine
from model_svc.server import IN_FLIGHT, ModelServicer, register
from model_svc.worker import ModelActivities, create_worker


def identity(settings: ModelSettings) -> ReplicaIdentity:
    """The catalog's name, priority and default flag unless the settings override them."""
    entry = CATALOG.get(settings.model_id) or fallback_entry(settings.model_id)
    return ReplicaIdentity(
        model_id=settings.model_id,
        model_name=settings.model_name or entry.model_name,
        model_type=types_pb2.MODEL_TYPE_LLM,
        priority=entry.priority if settings.priority is None else settings.priority,
        default_flag=entry.default_flag if settings.default_flag is None else settings.default_flag,
        max_concurrency=settings.max_concurrency,
        context_limit=settings.context_limit,
        gpu=settings.hardware_type == "gpu",
        task_queue=llm_task_queue(settings.model_id),
    )


def load_engines(settings: ModelSettings) -> list[Engine]:
    if settings.engine == "fake":
        return [
            FakeEngine(settings.model_id, settings.context_limit, settings.fake_first_token_ms, settings.fake_token_ms)
            for _ in range(settings.max_concurrency)
        ]
    path = Path(settings.model_path) if settings.model_path else locate_weights(settings.model_id)
    chat = (CATALOG.get(settings.model_id) or fallback_entry(settings.model_id)).chat
    gpu = settings.hardware_type == "gpu"
    # One context per unit of max_concurrency; the weights are mmapped, so extra contexts cost only KV cache.
    return [
        LlamaEngine(path, chat, settings.context_limit, settings.n_threads, gpu)
        for _ in range(settings.max_concurrency)
    ]


def weights_digest(settings: ModelSettings) -> str:
    """The fake engine's text depends only on its model id and the request."""
    if settings.engine == "fake":
        return f"fake:{settings.model_id}"
    return file_digest(Path(settings.model_path) if settings.model_path else locate_weights(settings.model_id))


class ModelApp:
    """ModelService over a pool of engines, and the worker whose `generate` activity calls it."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.identity = identity(settings)
        self.servicer = ModelServicer(metadata_pb2.ModelMetadata())
        self._activities: ModelActivities | None = None

    def add_servicers(self, server: grpc.aio.Server) -> list[str]:
        return register(server, self.servicer)

    def set_metadata(self, metadata: metadata_pb2.ModelMetadata) -> None:
        self.servicer.metadata = metadata

    async def load(self, load_changed: Callable[[], None]) -> str:
        engines = await asyncio.to_thread(load_engines, self.settings)
        self.servicer.pool = EnginePool(engines, self.settings.admission_timeout_s, load_changed)
        IN_FLIGHT.labels(self.settings.model_id).set_function(self.in_flight)
        return await asyncio.to_thread(weights_digest, self.settings)

    def in_flight(self) -> int:
        return self.servicer.in_flight

    def create_worker(self, client: Client, endpoint: str, task_queue: str) -> Worker:
        self._activities = ModelActivities(endpoint, client, self.settings.stream_flush_interval_s)
        return create_worker(client, task_queue, self._activities, self.settings.max_concurrency)

    async def worker_drained(self) -> None:
        self.servicer.draining = True
        if self._activities:
            await self._activities.close()

    def close(self) -> None:
        """Nothing to free early: the contexts go with the process."""


class ModelReplica(Replica[ModelApp]):
    """One model replica: the shared lifecycle around a ModelApp."""

    def __init__(self, settings: ModelSettings) -> None:
        super().__init__(settings, ModelApp(settings))
