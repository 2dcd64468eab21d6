"""One registry suite, run against SQLite (the embedded default) and a real PostgreSQL: persistence, migrations,
newest default wins and stale eviction when two API replicas race, and each replica's cache following the other's."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from helpers import eventually

from orchestrator_svc.registry.records import Hardware, Health, ModelMetadata, ModelType
from orchestrator_svc.registry.service import Registry
from orchestrator_svc.registry.store import open_store
from tools.stack import Child, PostgresCluster

OpenRegistry = Callable[..., AbstractAsyncContextManager[Registry]]


def metadata(model_id: str, endpoint: str = "127.0.0.1:1", default: bool = False, **fields: object) -> ModelMetadata:
    values: dict[str, object] = {
        "model_id": model_id,
        "model_name": model_id,
        "model_type": ModelType.LLM,
        "priority": 0,
        "default_flag": default,
        "max_concurrency": 2,
        "context_limit": 2048,
        "hardware": Hardware.CPU,
        "endpoint": endpoint,
        "task_queue": f"llm.{model_id}",
    }
    values.update(fields)
    return ModelMetadata(**values)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def open_registry(database_url: str) -> OpenRegistry:
    """An API replica's registry on the test's database; several may be open at once, as several replicas are."""

    @asynccontextmanager
    async def opened(**options: Any) -> AsyncIterator[Registry]:
        registry = Registry(await open_store(database_url), **options)
        await registry.open()
        try:
            yield registry
        finally:
            await registry.close()

    return opened


@pytest_asyncio.fixture
async def serving_endpoint() -> AsyncIterator[str]:
    """A grpc.health.v1 server that reports SERVING: a replica the registry's Watch stream sees as healthy."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    yield f"127.0.0.1:{port}"
    await server.stop(0)


def defaults(registry: Registry) -> set[str]:
    return {m.metadata.model_id for m in registry.models() if m.metadata.default_flag}


async def test_registrations_survive_a_restart_in_order(open_registry: OpenRegistry) -> None:
    async with open_registry() as registry:
        await registry.register(metadata("a"))
        await registry.register(metadata("b", "127.0.0.1:2"))
        await registry.register(metadata("a", "127.0.0.1:3"))
        await registry.register(metadata("b", "127.0.0.1:2", priority=7))  # again: keeps its place, new metadata
        await registry.deregister("a", "127.0.0.1:1")
    async with open_registry() as reopened:
        assert reopened.model_ids() == ["a", "b"]
        a, b = reopened.model("a"), reopened.model("b")
        assert [r.endpoint for r in a.replicas] == ["127.0.0.1:3"]
        assert b.metadata.priority == 7
        assert b.registration_order < a.registration_order  # a's first replica is gone; its second came later


async def test_newest_default_wins_and_is_persisted(open_registry: OpenRegistry) -> None:
    async with open_registry() as registry:
        await registry.register(metadata("old", default=True))
        await registry.register(metadata("embed", "127.0.0.1:9", default=True, model_type=ModelType.EMBEDDING))
        await registry.register(metadata("new", "127.0.0.1:2", default=True))
        assert defaults(registry) == {"new", "embed"}  # one default per model type
    async with open_registry() as reopened:
        assert defaults(reopened) == {"new", "embed"}


async def test_a_change_through_one_replica_reaches_the_other(open_registry: OpenRegistry, database_url: str) -> None:
    """PostgreSQL: by notification (the poll is set to a minute, so nothing else explains it). SQLite: by the poll."""
    notified = database_url.startswith("postgresql")
    sync_interval_s = 60.0 if notified else 0.2
    async with open_registry(sync_interval_s=60.0) as one, open_registry(sync_interval_s=sync_interval_s) as two:
        assert two.model_ids() == []
        if notified:
            await eventually(lambda: _async(two.events_received["connected"] == 1))
        await one.register(metadata("fresh", default=True))
        await eventually(lambda: _async(two.model_ids() == ["fresh"]), timeout_s=30)
        assert two.model("fresh").metadata.default_flag
        if notified:
            assert two.events_received["changed"] >= 1
            assert two.events_received["poll"] == 0
        await one.deregister("fresh", "127.0.0.1:1")
        await eventually(lambda: _async(two.model_ids() == []), timeout_s=30)


async def test_sqlite_replicas_catch_up_by_polling_the_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    one, two = Registry(await open_store(url)), Registry(await open_store(url), sync_interval_s=0.1)
    await one.open()
    await two.open()
    try:
        await one.register(metadata("x"))
        await eventually(lambda: _async(two.model_ids() == ["x"]), timeout_s=5)
        assert two.events_received["poll"] >= 1
    finally:
        await one.close()
        await two.close()


async def test_newest_default_wins_when_two_replicas_race(open_registry: OpenRegistry) -> None:
    """Two API replicas register conflicting defaults at the same moment, many times: the store serialises them,
    so exactly one default is left, and both caches agree on it."""
    async with open_registry(sync_interval_s=0.2) as one, open_registry(sync_interval_s=0.2) as two:
        for round_ in range(10):
            await asyncio.gather(
                one.register(metadata(f"a{round_}", f"127.0.0.1:{100 + round_}", default=True)),
                two.register(metadata(f"b{round_}", f"127.0.0.1:{200 + round_}", default=True)),
            )
        await one.sync()
        await two.sync()
        assert len(defaults(one)) == 1
        assert defaults(one) == defaults(two)
        assert defaults(one) <= {"a9", "b9"}  # the last round's later registration
    async with open_registry() as reopened:
        assert defaults(reopened) == defaults(one)


async def test_load_reaches_the_other_replica_and_expires(
    open_registry: OpenRegistry, database_url: str, serving_endpoint: str
) -> None:
    async with open_registry(load_ttl_s=0.6) as one, open_registry(load_ttl_s=0.6) as two:
        await one.register(metadata("m", serving_endpoint))
        await eventually(lambda: _async(one.model("m").health == Health.SERVING))
        await one.heartbeat("m", serving_endpoint, 2)
        assert one.model("m").in_flight == 2
        if database_url.startswith("postgresql"):
            await eventually(lambda: _async(two.model_ids() == ["m"] and two.model("m").in_flight == 2), 10)
            assert two.events_received["load"] >= 1
        # No heartbeat renews it: a count older than the TTL is no longer a fact, whatever it said.
        await eventually(lambda: _async(one.model("m").in_flight == 0), timeout_s=5)
        assert one.model("m").capacity == 2
        await eventually(lambda: _async(two.model_ids() == ["m"] and two.model("m").in_flight == 0), 10)


async def test_a_heartbeat_for_a_replica_registered_elsewhere_is_accepted(open_registry: OpenRegistry) -> None:
    """Replicas heartbeat whichever API replica answers; a cache a moment behind syncs instead of saying NOT_FOUND."""
    async with open_registry(sync_interval_s=60.0) as one, open_registry(sync_interval_s=60.0) as two:
        await one.register(metadata("m"))
        await two.heartbeat("m", "127.0.0.1:1", 1)
        assert two.model_ids() == ["m"]


async def test_both_replicas_evict_a_dead_replica_without_conflict(open_registry: OpenRegistry) -> None:
    async with open_registry(stale_after_s=0.4) as one, open_registry(stale_after_s=0.4) as two:
        await one.register(metadata("dead", "127.0.0.1:9"))  # nothing listens there: never SERVING
        await one.register(metadata("alive", "127.0.0.1:8"))
        await two.sync()
        for _ in range(5):  # "alive" keeps heartbeating through both replicas; "dead" is silent
            await one.heartbeat("alive", "127.0.0.1:8", 0)
            await two.heartbeat("alive", "127.0.0.1:8", 0)
            await asyncio.sleep(0.2)
        await eventually(lambda: _async(one.model_ids() == two.model_ids() == ["alive"]), timeout_s=10)


async def test_a_registry_db_from_before_migrations_is_adopted(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    with sqlite3.connect(path) as db:  # the schema release 0009 wrote, without yoyo's tables
        db.execute(
            "CREATE TABLE model_replicas (model_id TEXT NOT NULL, endpoint TEXT NOT NULL, metadata TEXT NOT NULL,"
            " registered_seq INTEGER NOT NULL, PRIMARY KEY (model_id, endpoint))"
        )
        db.execute(
            "INSERT INTO model_replicas VALUES ('old', '127.0.0.1:1', ?, 4)",
            (
                '{"model_id": "old", "model_name": "old", "model_type": "llm", "priority": 0, "default_flag": true, '
                '"max_concurrency": 1, "context_limit": 512, "hardware": "cpu", "endpoint": "127.0.0.1:1", '
                '"task_queue": "llm.old"}',
            ),
        )
    registry = Registry(await open_store(f"sqlite:///{path}"))
    await registry.open()
    try:
        assert registry.model("old").registration_order == 4
        await registry.register(metadata("new", "127.0.0.1:2"))
        assert registry.model("new").registration_order == 5
    finally:
        await registry.close()
    with sqlite3.connect(path) as db:
        applied = {row[0] for row in db.execute("SELECT migration_id FROM _yoyo_migration")}
    assert applied == {"0001.model-replicas", "0002.registry-events"}


async def _async(value: bool) -> bool:
    return value


async def test_replicas_follow_each_other_across_a_postgres_restart(
    postgres_url: str, postgres_server: tuple[PostgresCluster, Child]
) -> None:
    """The caches keep serving while PostgreSQL restarts; the notification feed reconnects by itself."""
    _, server = postgres_server
    one = Registry(await open_store(postgres_url), sync_interval_s=60.0)
    two = Registry(await open_store(postgres_url), sync_interval_s=60.0)
    await one.open()
    await two.open()
    try:
        await eventually(lambda: _async(two.events_received["connected"] == 1))
        await one.register(metadata("before"))
        await eventually(lambda: _async(two.model_ids() == ["before"]))
        await server.terminate(30)
        assert (one.model_ids(), two.model_ids()) == (["before"], ["before"])  # selection never waits on it
        await server.start(60)
        await eventually(lambda: _async(two.events_received["connected"] >= 2), timeout_s=30)
        await one.register(metadata("after", "127.0.0.1:2"))  # its connection broke: reopened once, then written
        await eventually(lambda: _async(two.model_ids() == ["after", "before"]), timeout_s=30)
        assert two.events_received["poll"] == 0
    finally:
        await one.close()
        await two.close()
