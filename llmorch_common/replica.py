"""One lifecycle for every replica, model or embedding: serve, load, poll, register and drain, always in that order."""

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import grpc
from grpc_health.v1 import health
from llmorch.internal.v1 import metadata_pb2
from llmorch.v1 import types_pb2
from temporalio.client import Client
from temporalio.worker import Worker

from llmorch_common.grpc_edge import create_server, set_serving
from llmorch_common.lifecycle import start_metrics, wait_for_termination
from llmorch_common.payload_codec import connect
from llmorch_common.registration import Registration

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaIdentity:
    """What sets one kind of replica's registry entry apart; the endpoint is known only once the port is bound."""

    model_id: str
    model_name: str
    model_type: types_pb2.ModelType.ValueType
    priority: int
    default_flag: bool
    max_concurrency: int
    context_limit: int
    gpu: bool
    task_queue: str


def build_metadata(identity: ReplicaIdentity, endpoint: str) -> metadata_pb2.ModelMetadata:
    return metadata_pb2.ModelMetadata(
        model_id=identity.model_id,
        model_name=identity.model_name,
        model_type=identity.model_type,
        priority=identity.priority,
        default_flag=identity.default_flag,
        max_concurrency=identity.max_concurrency,
        context_limit=identity.context_limit,
        hardware_type=types_pb2.HARDWARE_TYPE_GPU if identity.gpu else types_pb2.HARDWARE_TYPE_CPU,
        endpoint=endpoint,
        task_queue=identity.task_queue,
    )


def file_digest(path: Path) -> str:
    """The weights' identity for cache keys: "sha256:<hex>" of the file (a second or so for a few hundred MB)."""
    with path.open("rb") as weights:
        return "sha256:" + hashlib.file_digest(weights, "sha256").hexdigest()


class ReplicaSettings(Protocol):
    """The settings every replica has, each service under its own prefix (MODEL_*, EMBED_*)."""

    @property
    def host(self) -> str: ...
    @property
    def advertise_host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def metrics_port(self) -> int: ...
    @property
    def temporal_address(self) -> str: ...
    @property
    def temporal_namespace(self) -> str: ...
    @property
    def registry_address(self) -> str: ...
    @property
    def heartbeat_interval_s(self) -> float: ...
    @property
    def drain_timeout_s(self) -> float: ...


class ReplicaApp(Protocol):
    """What one kind of replica plugs into the lifecycle: its servicer, its weights and its worker."""

    @property
    def identity(self) -> ReplicaIdentity: ...

    def add_servicers(self, server: grpc.aio.Server) -> list[str]:
        """Add the servicers; return their full service names, whose health the lifecycle sets."""
        ...

    def set_metadata(self, metadata: metadata_pb2.ModelMetadata) -> None:
        """The registry entry, complete with the bound endpoint, for the servicers to report."""
        ...

    async def load(self, load_changed: Callable[[], None]) -> str:
        """Load the weights and return their digest (file_digest); call `load_changed` whenever in-flight work
        changes, so the registry hears at once."""
        ...

    def in_flight(self) -> int: ...

    def create_worker(self, client: Client, endpoint: str, task_queue: str) -> Worker:
        """The Temporal worker whose activities call this replica's own server at `endpoint`."""
        ...

    async def worker_drained(self) -> None:
        """The worker has finished its in-flight activities: refuse new work and close what the worker used."""
        ...

    def close(self) -> None:
        """The server has stopped: free the weights."""
        ...


App = TypeVar("App", bound=ReplicaApp)


class Replica(Generic[App]):
    """A replica's gRPC server, Temporal worker and registration, each held in its own field so drain is explicit."""

    def __init__(self, settings: ReplicaSettings, app: App) -> None:
        self.settings = settings
        self.app = app
        self.port = 0
        self.metadata = metadata_pb2.ModelMetadata()
        self._service_names: list[str] = []
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._registration: Registration | None = None
        self._worker: Worker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._drained = False

    async def start(self) -> None:
        await self.serve()
        await self.load()
        await self.poll()

    async def serve(self) -> None:
        """Bind and answer at once, NOT_SERVING: probes reach the process while the weights load."""
        settings = self.settings
        self._server, self.port, self._health = await create_server(self._add_servicers, settings.port, settings.host)
        self.metadata = build_metadata(self.app.identity, f"{settings.advertise_host}:{self.port}")
        self.app.set_metadata(self.metadata)
        await self._server.start()
        start_metrics(settings.metrics_port)
        if settings.registry_address:
            self._registration = Registration(settings.registry_address, self.metadata, settings.heartbeat_interval_s)
        log.info("listening on %s, loading %s", self.port, self.metadata.model_id)

    async def load(self) -> None:
        """Load the weights, then turn SERVING."""
        # The registration shares this message: it registers (in poll) with the weights' digest.
        self.metadata.model_digest = await self.app.load(
            self._registration.nudge.set if self._registration else _nothing
        )
        await self.set_serving(True)

    async def poll(self) -> None:
        """Poll the task queue, then register: the registry learns of us only once queued work can be picked up."""
        client = await connect(self.settings.temporal_address, self.settings.temporal_namespace)
        self._worker = self.app.create_worker(client, f"localhost:{self.port}", self.metadata.task_queue)
        self._worker_task = asyncio.create_task(self._worker.run(), name="worker")
        if self._registration:
            self._heartbeat_task = asyncio.create_task(self._registration.run(self.app.in_flight), name="heartbeat")
        log.info("SERVING %s on %s, polling %s", self.metadata.model_id, self.port, self.metadata.task_queue)

    async def set_serving(self, serving: bool) -> None:
        if self._health is None:
            raise RuntimeError("serve() first")
        await set_serving(self._health, self._service_names, serving)

    async def drain(self) -> None:
        """SIGTERM: NOT_SERVING so routers stop choosing us, leave the registry, finish in-flight work, then stop."""
        if self._drained or self._server is None or self._health is None:
            return
        self._drained = True
        await self._health.enter_graceful_shutdown()
        await self._deregister()
        await self._drain_worker()
        await self.app.worker_drained()
        await self._server.stop(self.settings.drain_timeout_s)
        self.app.close()

    def _add_servicers(self, server: grpc.aio.Server) -> list[str]:
        self._service_names = self.app.add_servicers(server)
        return self._service_names

    async def _deregister(self) -> None:
        if self._registration is None:
            return
        if self._heartbeat_task is None:  # drained before poll(): never registered
            await self._registration.close()
            return
        # Stop heartbeating first: a heartbeat after Deregister would register us again.
        self._heartbeat_task.cancel()
        await _settled(self._heartbeat_task)
        await self._registration.deregister()

    async def _drain_worker(self) -> None:
        if self._worker is None:
            return
        await self._worker.shutdown()  # waits for in-flight activities, which still need our server
        if self._worker_task:
            await _settled(self._worker_task)


async def run_until_terminated(replica: Replica[App]) -> None:
    """A container's whole life: start, serve until SIGTERM or SIGINT, then drain."""
    await replica.start()
    await wait_for_termination()
    log.info("draining")
    await replica.drain()
    log.info("stopped")


def _nothing() -> None:
    """Without a registry there is nobody to tell about load changes."""


async def _settled(task: asyncio.Task[None]) -> None:
    """Wait for a task that was cancelled or told to stop; a failure is logged, since drain must go on."""
    await asyncio.wait([task])  # unlike `await task`, never mistakes the task's cancellation for ours
    if not task.cancelled() and task.exception() is not None:
        log.error("%s task failed", task.get_name(), exc_info=task.exception())
