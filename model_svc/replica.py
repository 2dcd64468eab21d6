"""One model replica's lifecycle: gRPC server, weights, Temporal worker and registration, started and drained as one."""

import asyncio
import contextlib
import logging
from pathlib import Path

from llmorch.internal.v1 import metadata_pb2
from llmorch.v1 import types_pb2
from temporalio.client import Client

from llmorch_common.constants import llm_task_queue
from llmorch_common.grpc_edge import create_server, set_serving
from llmorch_common.lifecycle import start_metrics
from llmorch_common.registration import Registration
from model_svc.catalog import CATALOG, fallback_entry, locate_weights
from model_svc.config import ModelSettings
from model_svc.engine import Engine, EnginePool, FakeEngine, LlamaEngine
from model_svc.server import IN_FLIGHT, SERVICE_NAME, ModelServicer, register
from model_svc.worker import ModelActivities, create_worker

log = logging.getLogger(__name__)


def build_metadata(settings: ModelSettings, port: int) -> metadata_pb2.ModelMetadata:
    entry = CATALOG.get(settings.model_id) or fallback_entry(settings.model_id)
    return metadata_pb2.ModelMetadata(
        model_id=settings.model_id,
        model_name=settings.model_name or entry.model_name,
        model_type=types_pb2.MODEL_TYPE_LLM,
        priority=entry.priority if settings.priority is None else settings.priority,
        default_flag=entry.default_flag if settings.default_flag is None else settings.default_flag,
        max_concurrency=settings.max_concurrency,
        context_limit=settings.context_limit,
        hardware_type=types_pb2.HARDWARE_TYPE_GPU if settings.hardware_type == "gpu" else types_pb2.HARDWARE_TYPE_CPU,
        endpoint=f"{settings.advertise_host}:{port}",
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


class ModelReplica:
    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.servicer = ModelServicer(metadata_pb2.ModelMetadata())
        self._tasks: list[asyncio.Task[None]] = []
        self._drained = False

    async def start(self) -> None:
        """Serve NOT_SERVING at once, load weights, then turn SERVING, poll the queue and register."""
        settings = self.settings
        self.server, self.port, self.health = await create_server(
            lambda s: register(s, self.servicer), settings.port, settings.host
        )
        self.servicer.metadata = build_metadata(settings, self.port)
        await self.server.start()
        start_metrics(settings.metrics_port)
        log.info("listening on %s, loading weights", self.port)
        self.registration = Registration(settings.registry_address, self.metadata, settings.heartbeat_interval_s)
        self.servicer.pool = EnginePool(
            await asyncio.to_thread(load_engines, settings), settings.admission_timeout_s, self.registration.nudge.set
        )
        IN_FLIGHT.labels(settings.model_id).set_function(lambda: self.servicer.in_flight)
        await set_serving(self.health, [SERVICE_NAME], True)
        client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
        self.activities = ModelActivities(f"localhost:{self.port}", client)
        self.worker = create_worker(client, self.metadata.task_queue, self.activities, settings.max_concurrency)
        self._tasks.append(asyncio.create_task(self.worker.run()))
        if settings.registry_address:
            self._tasks.append(asyncio.create_task(self.registration.run(lambda: self.servicer.in_flight)))
        log.info("SERVING %s on %s, polling %s", settings.model_id, self.port, self.metadata.task_queue)

    @property
    def metadata(self) -> metadata_pb2.ModelMetadata:
        return self.servicer.metadata

    async def set_serving(self, serving: bool) -> None:
        await set_serving(self.health, [SERVICE_NAME], serving)

    async def drain(self) -> None:
        """SIGTERM: NOT_SERVING first so the router stops choosing us, then finish in-flight work and stop."""
        if self._drained:
            return
        self._drained = True
        await self.health.enter_graceful_shutdown()
        if self.settings.registry_address:
            self._tasks[-1].cancel()
            await self.registration.deregister()
        await self.worker.shutdown()  # waits for in-flight generations, up to graceful_shutdown_timeout
        self.servicer.draining = True
        await self.activities.close()
        await self.server.stop(self.settings.drain_timeout_s)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
