"""The model registry: replicas persisted in SQLite, with live health from grpc.health.v1 Watch streams."""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from llmorch.internal.v1 import metadata_pb2, registry_pb2
from llmorch.v1 import types_pb2

from llmorch_common.errors import FieldViolation, invalid_argument, not_found

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS replicas (
    model_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    metadata BLOB NOT NULL,
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


def metadata_violations(metadata: metadata_pb2.ModelMetadata) -> list[FieldViolation]:
    violations = []

    def bad(name: str, description: str) -> None:
        violations.append(FieldViolation(f"metadata.{name}", description))

    if not metadata.model_id.strip():
        bad("model_id", "required")
    if metadata.model_type not in (types_pb2.MODEL_TYPE_LLM, types_pb2.MODEL_TYPE_EMBEDDING):
        bad("model_type", "must be MODEL_TYPE_LLM or MODEL_TYPE_EMBEDDING")
    if metadata.max_concurrency < 1:
        bad("max_concurrency", "must be at least 1")
    if metadata.context_limit < 1:
        bad("context_limit", "must be at least 1")
    if not metadata.endpoint.strip():
        bad("endpoint", "required (host:port)")
    return violations


@dataclass
class ReplicaState:
    metadata: metadata_pb2.ModelMetadata
    registered_seq: int
    health: types_pb2.HealthState.ValueType = types_pb2.HEALTH_STATE_UNSPECIFIED
    in_flight: int = 0
    last_heartbeat: float = field(default_factory=time.monotonic)


class Registry:
    def __init__(self, db_path: Path, stale_after_s: float = 300.0) -> None:
        self._db_path = db_path
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
        async with self._db.execute("SELECT metadata, registered_seq FROM replicas ORDER BY registered_seq") as rows:
            async for blob, seq in rows:
                metadata = metadata_pb2.ModelMetadata.FromString(blob)
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

    async def register(self, metadata: metadata_pb2.ModelMetadata) -> registry_pb2.RegisteredModel:
        violations = metadata_violations(metadata)
        if violations:
            raise invalid_argument(violations)
        if metadata.default_flag:
            await self._demote_other_defaults(metadata)
        key = (metadata.model_id, metadata.endpoint)
        existing = self._replicas.get(key)
        self._seq += 1
        seq = existing.registered_seq if existing else self._seq
        await self.db.execute(
            "INSERT OR REPLACE INTO replicas VALUES (?, ?, ?, ?)",
            (metadata.model_id, metadata.endpoint, metadata.SerializeToString(), seq),
        )
        await self.db.commit()
        if existing:
            existing.metadata = metadata
        else:
            self._replicas[key] = ReplicaState(metadata, seq)
        self._watch(metadata.endpoint)
        return self.model(metadata.model_id)

    async def _demote_other_defaults(self, metadata: metadata_pb2.ModelMetadata) -> None:
        """Two defaults of one type conflict; the newest registration wins and the older loses its flag."""
        for state in self._replicas.values():
            other = state.metadata
            if other.model_id != metadata.model_id and other.model_type == metadata.model_type and other.default_flag:
                log.warning("default %s replaced by newer default %s", other.model_id, metadata.model_id)
                other.default_flag = False
                await self.db.execute(
                    "UPDATE replicas SET metadata = ? WHERE model_id = ? AND endpoint = ?",
                    (other.SerializeToString(), other.model_id, other.endpoint),
                )

    def heartbeat(self, model_id: str, endpoint: str, in_flight: int) -> None:
        state = self._replicas.get((model_id, endpoint))
        if state is None:
            raise not_found(f"replica {model_id}@{endpoint} is not registered")
        state.in_flight = in_flight
        state.last_heartbeat = time.monotonic()

    async def deregister(self, model_id: str, endpoint: str) -> None:
        self._replicas.pop((model_id, endpoint), None)
        await self.db.execute("DELETE FROM replicas WHERE model_id = ? AND endpoint = ?", (model_id, endpoint))
        await self.db.commit()
        if not any(key[1] == endpoint for key in self._replicas):
            watcher = self._watchers.pop(endpoint, None)
            if watcher:
                watcher.cancel()

    def model_ids(self) -> list[str]:
        return sorted({model_id for model_id, _ in self._replicas})

    def model(self, model_id: str) -> registry_pb2.RegisteredModel:
        replicas = sorted(
            (s for (mid, _), s in self._replicas.items() if mid == model_id), key=lambda s: s.registered_seq
        )
        if not replicas:
            raise not_found(f"model {model_id!r} is not registered")
        serving = [s for s in replicas if s.health == types_pb2.HEALTH_STATE_SERVING]
        newest = max(replicas, key=lambda s: s.registered_seq)
        return registry_pb2.RegisteredModel(
            registration_order=replicas[0].registered_seq,
            metadata=newest.metadata,
            health=types_pb2.HEALTH_STATE_SERVING if serving else _worst(replicas),
            in_flight=sum(s.in_flight for s in serving),
            capacity=sum(s.metadata.max_concurrency for s in serving),
            replicas=[
                registry_pb2.Replica(endpoint=s.metadata.endpoint, health=s.health, in_flight=s.in_flight)
                for s in replicas
            ],
        )

    def models(
        self, model_type: types_pb2.ModelType.ValueType = types_pb2.MODEL_TYPE_UNSPECIFIED
    ) -> list[registry_pb2.RegisteredModel]:
        listed = [self.model(model_id) for model_id in self.model_ids()]
        return [m for m in listed if model_type in (types_pb2.MODEL_TYPE_UNSPECIFIED, m.metadata.model_type)]

    async def _reap_forever(self) -> None:
        """A replica that crashed never deregisters: once it has been down and silent this long, forget it."""
        while True:
            await asyncio.sleep(min(self._stale_after_s / 4, 30.0))
            now = time.monotonic()
            for (model_id, endpoint), state in list(self._replicas.items()):
                silent_s = now - state.last_heartbeat
                if state.health != types_pb2.HEALTH_STATE_SERVING and silent_s > self._stale_after_s:
                    log.warning("removing %s@%s: down and silent for %.0fs", model_id, endpoint, silent_s)
                    await self.deregister(model_id, endpoint)

    def _set_health(self, endpoint: str, health: types_pb2.HealthState.ValueType) -> None:
        changed = False
        for (_, replica_endpoint), state in self._replicas.items():
            if replica_endpoint == endpoint and state.health != health:
                state.health = health
                changed = True
        if changed:
            log.info("health %s -> %s", endpoint, types_pb2.HealthState.Name(health))

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
                        self._set_health(
                            endpoint, types_pb2.HEALTH_STATE_SERVING if serving else types_pb2.HEALTH_STATE_NOT_SERVING
                        )
                except grpc.aio.AioRpcError:
                    pass
                self._set_health(endpoint, types_pb2.HEALTH_STATE_NOT_SERVING)
                await asyncio.sleep(WATCH_RETRY_S)


def _worst(replicas: list[ReplicaState]) -> types_pb2.HealthState.ValueType:
    if any(s.health == types_pb2.HEALTH_STATE_NOT_SERVING for s in replicas):
        return types_pb2.HEALTH_STATE_NOT_SERVING
    return types_pb2.HEALTH_STATE_UNSPECIFIED
