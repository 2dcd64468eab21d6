"""The model registry's rules: replicas persisted in a RegistryStore (SQLite or PostgreSQL) behind an in-process
cache, live health from grpc.health.v1 Watch streams, load with a TTL, the newest default wins, and a crashed replica
is forgotten once it stays down and silent. Selection reads only the cache: it never waits on the database."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import Counter, Gauge

from llmorch_common.errors import not_found
from orchestrator_svc.registry.records import Health, ModelMetadata, ModelType, RegisteredModel, ReplicaView
from orchestrator_svc.registry.store import Event, RegistryStore, StoredReplica

log = logging.getLogger(__name__)

# Reconnect quickly: a replica that comes back must rejoin the candidate set within about a second.
WATCH_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
WATCH_RETRY_S = 0.2
BacklogReader = Callable[[str], Awaitable[int]]
SYNC_EVENTS = Counter("llmorch_registry_sync_total", "Registry cache updates by cause", ["cause"])
# Published on every change of the cache and of health, so alerts see a model leave at once (not at the next listing).
SERVING_REPLICAS = Gauge(
    "llmorch_model_serving_replicas",
    "Replicas of a model reporting SERVING, as this registry sees them",
    ["model_id", "model_type"],
)
CAPACITY = Gauge(
    "llmorch_model_capacity", "Generations a model runs at once over its serving replicas", ["model_id", "model_type"]
)


@dataclass
class ReplicaState:
    metadata: ModelMetadata
    registered_seq: int
    health: Health = Health.UNKNOWN
    in_flight: int = 0
    last_heartbeat: float = field(default_factory=time.monotonic)


class Registry:
    """Registrations in a shared store, cached here, with live health from Health/Watch and heartbeated load.

    Several API replicas may share one PostgreSQL store: each follows the others' changes through the store's
    notifications (and a bounded poll of the store's version, for a missed one) and holds its own health streams.
    """

    def __init__(
        self,
        store: RegistryStore,
        stale_after_s: float = 300.0,
        backlog: BacklogReader | None = None,
        load_ttl_s: float = 5.0,
        sync_interval_s: float = 2.0,
    ) -> None:
        self._store = store
        self._backlog = backlog
        self._stale_after_s = stale_after_s
        self._load_ttl_s = load_ttl_s
        self._sync_interval_s = sync_interval_s
        self._tasks: list[asyncio.Task[None]] = []
        self._replicas: dict[tuple[str, str], ReplicaState] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._version = -1
        self._sync_lock = asyncio.Lock()
        # What the cache learnt from other API replicas, by cause: the tests assert the mechanism with it.
        self.events_received: dict[str, int] = {"connected": 0, "changed": 0, "load": 0, "poll": 0}

    async def open(self) -> None:
        await self.sync()
        self._tasks = [
            asyncio.create_task(self._reap_forever(), name="registry-reaper"),
            asyncio.create_task(self._poll_forever(), name="registry-poll"),
            asyncio.create_task(self._store.listen(self._on_event), name="registry-listen"),
        ]

    async def close(self) -> None:
        tasks = [*self._watchers.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._store.close()

    async def sync(self) -> None:
        """Make the cache match the store; health, load and heartbeats of replicas still there are kept."""
        async with self._sync_lock:
            version, rows = await self._store.rows()
            self._apply(rows)
            self._version = version

    def _apply(self, rows: list[StoredReplica]) -> None:
        current = {(r.metadata.model_id, r.metadata.endpoint): r for r in rows}
        touched = {(s.metadata.model_id, s.metadata.model_type) for s in self._replicas.values()}
        touched |= {(r.metadata.model_id, r.metadata.model_type) for r in rows}
        for key in [key for key in self._replicas if key not in current]:
            del self._replicas[key]
        for key, row in current.items():
            state = self._replicas.get(key)
            if state is None:
                self._replicas[key] = ReplicaState(row.metadata, row.registered_seq)
            else:
                state.metadata, state.registered_seq = row.metadata, row.registered_seq
            self._watch(row.metadata.endpoint)
        for endpoint in [e for e in self._watchers if not any(k[1] == e for k in self._replicas)]:
            self._watchers.pop(endpoint).cancel()
        for model_id, model_type in touched:
            self._publish(model_id, model_type)

    def _publish(self, model_id: str, model_type: ModelType) -> None:
        """A model with no replica left publishes zero, so "no SERVING LLM" sees it go."""
        serving = [s for (mid, _), s in self._replicas.items() if mid == model_id and s.health == Health.SERVING]
        SERVING_REPLICAS.labels(model_id, model_type).set(len(serving))
        CAPACITY.labels(model_id, model_type).set(sum(s.metadata.max_concurrency for s in serving))

    async def _on_event(self, event: Event) -> None:
        self.events_received[event.kind] = self.events_received.get(event.kind, 0) + 1
        SYNC_EVENTS.labels(event.kind).inc()
        if event.kind == "load":
            self._record_load(event.model_id, event.endpoint, event.in_flight)
        else:
            await self.sync()

    async def _poll_forever(self) -> None:
        """The bound on staleness when a notification is lost (or the store has none): compare versions."""
        while True:
            await asyncio.sleep(self._sync_interval_s)
            try:
                if await self._store.version() != self._version:
                    self.events_received["poll"] += 1
                    SYNC_EVENTS.labels("poll").inc()
                    await self.sync()
            except Exception as error:  # the database may be restarting; the cache keeps serving meanwhile
                log.warning("registry poll failed: %s", error)

    async def register(self, metadata: ModelMetadata) -> RegisteredModel:
        demoted = await self._store.register(metadata)
        for model_id in demoted:
            log.warning("default %s replaced by newer default %s", model_id, metadata.model_id)
        await self.sync()
        return self.model(metadata.model_id)

    async def heartbeat(self, model_id: str, endpoint: str, in_flight: int) -> None:
        if (model_id, endpoint) not in self._replicas:
            await self.sync()  # registered through another API replica a moment ago?
        if not self._record_load(model_id, endpoint, in_flight):
            raise not_found(f"replica {model_id}@{endpoint} is not registered")
        try:
            await self._store.publish_load(model_id, endpoint, in_flight)
        except Exception as error:  # load is best-effort: the other replicas' copies expire with their TTL
            log.warning("could not publish load of %s@%s: %s", model_id, endpoint, error)

    def _record_load(self, model_id: str, endpoint: str, in_flight: int) -> bool:
        state = self._replicas.get((model_id, endpoint))
        if state is None:
            return False
        state.in_flight = in_flight
        state.last_heartbeat = time.monotonic()
        return True

    async def deregister(self, model_id: str, endpoint: str) -> None:
        await self._store.deregister(model_id, endpoint)
        await self.sync()

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
            in_flight=sum(self._fresh_in_flight(s) for s in serving),
            capacity=sum(s.metadata.max_concurrency for s in serving),
            replicas=tuple(ReplicaView(s.metadata.endpoint, s.health, self._fresh_in_flight(s)) for s in replicas),
        )

    def _fresh_in_flight(self, state: ReplicaState) -> int:
        """A count not renewed within the TTL is no longer a fact: it reads as 0, and health decides availability."""
        return state.in_flight if time.monotonic() - state.last_heartbeat <= self._load_ttl_s else 0

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
                    # Every API replica may reach this verdict; deleting an absent row is harmless.
                    log.warning("removing %s@%s: down and silent for %.0fs", model_id, endpoint, silent_s)
                    try:
                        await self.deregister(model_id, endpoint)
                    except Exception as error:
                        log.warning("could not remove %s@%s: %s", model_id, endpoint, error)

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
