"""The model registry's rules: replicas persisted in SQLite, live health from grpc.health.v1 Watch streams, the
newest default wins, and a crashed replica is forgotten once it stays down and silent."""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import aiosqlite
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Gauge

from llmorch_common.errors import not_found
from orchestrator_svc.registry.records import Hardware, Health, ModelMetadata, ModelType, RegisteredModel, ReplicaView

log = logging.getLogger(__name__)

# Metadata is stored as JSON of the domain record: the table is read only by this module.
SCHEMA = """
CREATE TABLE IF NOT EXISTS model_replicas (
    model_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    metadata TEXT NOT NULL,
    registered_seq INTEGER NOT NULL,
    PRIMARY KEY (model_id, endpoint)
)
"""
# Reconnect quickly: a replica that comes back must rejoin the candidate set within about a second.
WATCH_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
WATCH_RETRY_S = 0.2
BacklogReader = Callable[[str], Awaitable[int]]
# Published on every registration and health change, so alerts see a model leave at once (not at the next listing).
SERVING_REPLICAS = Gauge(
    "llmorch_model_serving_replicas",
    "Replicas of a model reporting SERVING, as this registry sees them",
    ["model_id", "model_type"],
)
CAPACITY = Gauge(
    "llmorch_model_capacity", "Generations a model runs at once over its serving replicas", ["model_id", "model_type"]
)


def metadata_json(metadata: ModelMetadata) -> str:
    return json.dumps(asdict(metadata))


def metadata_from_json(text: str) -> ModelMetadata:
    fields = json.loads(text)
    fields["model_type"] = ModelType(fields["model_type"])
    fields["hardware"] = Hardware(fields["hardware"])
    return ModelMetadata(**fields)


@dataclass
class ReplicaState:
    metadata: ModelMetadata
    registered_seq: int
    health: Health = Health.UNKNOWN
    in_flight: int = 0
    last_heartbeat: float = field(default_factory=time.monotonic)


class Registry:
    """Registrations persisted in SQLite, with live health from Health/Watch and heartbeated load."""

    def __init__(self, db_path: Path, stale_after_s: float = 300.0, backlog: BacklogReader | None = None) -> None:
        self._db_path = db_path
        self._backlog = backlog
        self._stale_after_s = stale_after_s
        self._reaper: asyncio.Task[None] | None = None
        self._db: aiosqlite.Connection | None = None
        self._replicas: dict[tuple[str, str], ReplicaState] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._seq = 0

    async def open(self) -> None:
        self._db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self._db_path)
        await self._db.execute(SCHEMA)
        await self._db.commit()
        query = "SELECT metadata, registered_seq FROM model_replicas ORDER BY registered_seq"
        async with self._db.execute(query) as rows:
            async for text, seq in rows:
                metadata = metadata_from_json(text)
                self._replicas[(metadata.model_id, metadata.endpoint)] = ReplicaState(metadata, seq)
                self._seq = max(self._seq, seq)
                self._watch(metadata.endpoint)
        self._reaper = asyncio.create_task(self._reap_forever())

    async def close(self) -> None:
        tasks = [*self._watchers.values(), *([self._reaper] if self._reaper else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._db:
            await self._db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, "Registry.open() first"
        return self._db

    async def register(self, metadata: ModelMetadata) -> RegisteredModel:
        if metadata.default_flag:
            await self._demote_other_defaults(metadata)
        key = (metadata.model_id, metadata.endpoint)
        existing = self._replicas.get(key)
        self._seq += 1
        seq = existing.registered_seq if existing else self._seq
        await self.db.execute(
            "INSERT OR REPLACE INTO model_replicas VALUES (?, ?, ?, ?)",
            (metadata.model_id, metadata.endpoint, metadata_json(metadata), seq),
        )
        await self.db.commit()
        if existing:
            existing.metadata = metadata
        else:
            self._replicas[key] = ReplicaState(metadata, seq)
        self._watch(metadata.endpoint)
        self._publish(metadata.model_id, metadata.model_type)
        return self.model(metadata.model_id)

    async def _demote_other_defaults(self, metadata: ModelMetadata) -> None:
        """Two defaults of one type conflict; the newest registration wins and the older loses its flag."""
        for state in self._replicas.values():
            other = state.metadata
            if other.model_id != metadata.model_id and other.model_type == metadata.model_type and other.default_flag:
                log.warning("default %s replaced by newer default %s", other.model_id, metadata.model_id)
                state.metadata = replace(other, default_flag=False)
                await self.db.execute(
                    "UPDATE model_replicas SET metadata = ? WHERE model_id = ? AND endpoint = ?",
                    (metadata_json(state.metadata), other.model_id, other.endpoint),
                )

    def heartbeat(self, model_id: str, endpoint: str, in_flight: int) -> None:
        state = self._replicas.get((model_id, endpoint))
        if state is None:
            raise not_found(f"replica {model_id}@{endpoint} is not registered")
        state.in_flight = in_flight
        state.last_heartbeat = time.monotonic()

    async def deregister(self, model_id: str, endpoint: str) -> None:
        gone = self._replicas.pop((model_id, endpoint), None)
        if gone:
            self._publish(model_id, gone.metadata.model_type)
        await self.db.execute("DELETE FROM model_replicas WHERE model_id = ? AND endpoint = ?", (model_id, endpoint))
        await self.db.commit()
        if not any(key[1] == endpoint for key in self._replicas):
            watcher = self._watchers.pop(endpoint, None)
            if watcher:
                watcher.cancel()

    def _publish(self, model_id: str, model_type: ModelType) -> None:
        """A model with no replica left publishes zero, so "no SERVING LLM" sees it go."""
        serving = [s for (mid, _), s in self._replicas.items() if mid == model_id and s.health == Health.SERVING]
        SERVING_REPLICAS.labels(model_id, model_type).set(len(serving))
        CAPACITY.labels(model_id, model_type).set(sum(s.metadata.max_concurrency for s in serving))

    def model_ids(self) -> list[str]:
        return sorted({model_id for model_id, _ in self._replicas})

    def model(self, model_id: str) -> RegisteredModel:
        replicas = sorted(
            (s for (mid, _), s in self._replicas.items() if mid == model_id), key=lambda s: s.registered_seq
        )
        if not replicas:
            raise not_found(f"model {model_id!r} is not registered")
        serving = [s for s in replicas if s.health == Health.SERVING]
        return RegisteredModel(
            metadata=replicas[-1].metadata,
            registration_order=replicas[0].registered_seq,
            health=Health.SERVING if serving else _worst(replicas),
            in_flight=sum(s.in_flight for s in serving),
            capacity=sum(s.metadata.max_concurrency for s in serving),
            replicas=tuple(ReplicaView(s.metadata.endpoint, s.health, s.in_flight) for s in replicas),
        )

    def models(self, model_type: ModelType | None = None) -> list[RegisteredModel]:
        listed = [self.model(model_id) for model_id in self.model_ids()]
        return [m for m in listed if model_type in (None, m.metadata.model_type)]

    def llm_ids(self) -> set[str]:
        return {m.metadata.model_id for m in self.models(ModelType.LLM)}

    async def live_models(self, model_type: ModelType | None = None) -> list[RegisteredModel]:
        """Registered models with live health and, where Temporal answers, their queue backlog."""
        models = self.models(model_type)
        if self._backlog is None:
            return models
        return [replace(m, queue_backlog=await self._backlog(m.metadata.task_queue)) for m in models]

    async def _reap_forever(self) -> None:
        """A replica that crashed never deregisters: once it has been down and silent this long, forget it."""
        while True:
            await asyncio.sleep(min(self._stale_after_s / 4, 30.0))
            now = time.monotonic()
            for (model_id, endpoint), state in list(self._replicas.items()):
                silent_s = now - state.last_heartbeat
                if state.health != Health.SERVING and silent_s > self._stale_after_s:
                    log.warning("removing %s@%s: down and silent for %.0fs", model_id, endpoint, silent_s)
                    await self.deregister(model_id, endpoint)

    def _set_health(self, endpoint: str, health: Health) -> None:
        for (model_id, replica_endpoint), state in self._replicas.items():
            if replica_endpoint == endpoint and state.health != health:
                state.health = health
                self._publish(model_id, state.metadata.model_type)
                log.info("health %s@%s -> %s", model_id, endpoint, health)

    def _watch(self, endpoint: str) -> None:
        if endpoint not in self._watchers or self._watchers[endpoint].done():
            self._watchers[endpoint] = asyncio.create_task(self._watch_forever(endpoint))

    async def _watch_forever(self, endpoint: str) -> None:
        """Hold a Health/Watch stream; a broken stream means NOT_SERVING until the endpoint answers again."""
        async with grpc.aio.insecure_channel(endpoint, options=WATCH_CHANNEL_OPTIONS) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    async for reply in stub.Watch(health_pb2.HealthCheckRequest(service="")):
                        serving = reply.status == health_pb2.HealthCheckResponse.SERVING
                        self._set_health(endpoint, Health.SERVING if serving else Health.NOT_SERVING)
                except grpc.aio.AioRpcError:
                    pass
                self._set_health(endpoint, Health.NOT_SERVING)
                await asyncio.sleep(WATCH_RETRY_S)


def _worst(replicas: list[ReplicaState]) -> Health:
    return Health.NOT_SERVING if any(s.health == Health.NOT_SERVING for s in replicas) else Health.UNKNOWN
