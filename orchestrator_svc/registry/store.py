"""Where registrations persist: SQLite (the embedded default) or PostgreSQL (several API replicas), one schema with
versioned migrations (yoyo, `migrations/`), and a change feed so every API replica's cache follows promptly.

Registrations are durable rows. Load (in-flight counts) is an ephemeral fact with a TTL: it is never written, only
published (PostgreSQL NOTIFY) to the other replicas. Every write bumps `registry_version` in the same transaction,
so a replica that missed a notification still catches up on its next poll.
"""

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import psycopg

from orchestrator_svc.database import PgConnection, is_postgres, migrate, sqlite_path
from orchestrator_svc.registry.records import Hardware, ModelMetadata, ModelType

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
CHANNEL = "llmorch_registry"
# Serialises registrations across API replicas (PostgreSQL advisory lock key), so "newest default wins" holds.
REGISTRATION_LOCK = 0x6C6C6D6F7263  # "llmorc"
LISTEN_RETRY_S = 0.5


@dataclass(frozen=True)
class StoredReplica:
    metadata: ModelMetadata
    registered_seq: int


@dataclass(frozen=True)
class Event:
    """What another API replica did: `changed` (reload the rows) or `load` (one replica's in-flight count); or
    `connected`: the feed (re)started, and whatever changed while it was down must be reloaded."""

    kind: str
    model_id: str = ""
    endpoint: str = ""
    in_flight: int = 0

    def payload(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def parse(cls, payload: str) -> "Event":
        return cls(**json.loads(payload))


EventHandler = Callable[[Event], Awaitable[None]]


def metadata_json(metadata: ModelMetadata) -> str:
    return json.dumps(asdict(metadata))


def metadata_from_json(text: str) -> ModelMetadata:
    fields = json.loads(text)
    fields["model_type"] = ModelType(fields["model_type"])
    fields["hardware"] = Hardware(fields["hardware"])
    return ModelMetadata(**fields)


class RegistryStore(Protocol):
    async def version(self) -> int: ...
    async def rows(self) -> tuple[int, list[StoredReplica]]: ...
    async def register(self, metadata: ModelMetadata) -> list[str]: ...
    async def deregister(self, model_id: str, endpoint: str) -> None: ...
    async def publish_load(self, model_id: str, endpoint: str, in_flight: int) -> None: ...
    async def listen(self, handler: EventHandler) -> None: ...
    async def close(self) -> None: ...


async def open_store(database_url: str) -> RegistryStore:
    await migrate(database_url, MIGRATIONS)
    if is_postgres(database_url):
        return await PostgresStore.open(database_url)
    return await SqliteStore.open(sqlite_path(database_url))


def registration_rows(rows: list[StoredReplica], metadata: ModelMetadata) -> list[StoredReplica]:
    """The rows one registration writes, given every row under the writer's lock.

    A replica registering again keeps its sequence number (rule 4 of the router is registration order). Two
    defaults of one type conflict: the newest registration wins, and every other model loses its flag.
    """
    key = (metadata.model_id, metadata.endpoint)
    existing = next((r for r in rows if (r.metadata.model_id, r.metadata.endpoint) == key), None)
    seq = existing.registered_seq if existing else max((r.registered_seq for r in rows), default=0) + 1
    demoted = [
        replace(row, metadata=replace(row.metadata, default_flag=False))
        for row in rows
        if metadata.default_flag
        and row.metadata.default_flag
        and row.metadata.model_id != metadata.model_id
        and row.metadata.model_type == metadata.model_type
    ]
    return [*demoted, StoredReplica(metadata, seq)]


# ---------------------------------------------------------------------------------------------------------------
# SQLite: one process owns the file; the API replica's poll is its only reader of changes.


class SqliteStore:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> "SqliteStore":
        return cls(await aiosqlite.connect(path))

    async def version(self) -> int:
        async with self._db.execute("SELECT version FROM registry_version WHERE id = 1") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def rows(self) -> tuple[int, list[StoredReplica]]:
        query = "SELECT metadata, registered_seq FROM model_replicas ORDER BY registered_seq"
        async with self._db.execute(query) as cursor:
            rows = [StoredReplica(metadata_from_json(text), int(seq)) async for text, seq in cursor]
        return await self.version(), rows

    async def register(self, metadata: ModelMetadata) -> list[str]:
        async with self._transaction():
            _, rows = await self.rows()
            written = registration_rows(rows, metadata)
            for row in written:
                await self._db.execute(
                    "INSERT OR REPLACE INTO model_replicas VALUES (?, ?, ?, ?)",
                    (row.metadata.model_id, row.metadata.endpoint, metadata_json(row.metadata), row.registered_seq),
                )
        return [row.metadata.model_id for row in written[:-1]]

    async def deregister(self, model_id: str, endpoint: str) -> None:
        async with self._transaction():
            await self._db.execute(
                "DELETE FROM model_replicas WHERE model_id = ? AND endpoint = ?", (model_id, endpoint)
            )

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            await self._db.execute("UPDATE registry_version SET version = version + 1 WHERE id = 1")
            await self._db.commit()
        except BaseException:
            await self._db.rollback()
            raise

    async def publish_load(self, model_id: str, endpoint: str, in_flight: int) -> None:
        """One process, one cache: nobody else to tell."""

    async def listen(self, handler: EventHandler) -> None:
        await asyncio.Event().wait()  # SQLite has no notifications; the registry's poll covers it

    async def close(self) -> None:
        await self._db.close()


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL: several API replicas; writes are serialised by an advisory lock and announced with NOTIFY.


class PostgresStore:
    def __init__(self, url: str) -> None:
        self._url = url
        self._db = PgConnection(url)

    @classmethod
    async def open(cls, url: str) -> "PostgresStore":
        store = cls(url)
        await store.version()
        return store

    async def _run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[Any]]) -> Any:
        return await self._db.run(work)

    async def version(self) -> int:
        async def read(conn: psycopg.AsyncConnection[Any]) -> int:
            cursor = await conn.execute("SELECT version FROM registry_version WHERE id = 1")
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

        return int(await self._run(read))

    async def rows(self) -> tuple[int, list[StoredReplica]]:
        async def read(conn: psycopg.AsyncConnection[Any]) -> tuple[int, list[StoredReplica]]:
            async with conn.transaction():
                cursor = await conn.execute("SELECT version FROM registry_version WHERE id = 1")
                row = await cursor.fetchone()
                return int(row[0]) if row else 0, await self._rows(conn)

        result: tuple[int, list[StoredReplica]] = await self._run(read)
        return result

    @staticmethod
    async def _rows(conn: psycopg.AsyncConnection[Any]) -> list[StoredReplica]:
        cursor = await conn.execute("SELECT metadata, registered_seq FROM model_replicas ORDER BY registered_seq")
        return [StoredReplica(metadata_from_json(text), int(seq)) for text, seq in await cursor.fetchall()]

    async def register(self, metadata: ModelMetadata) -> list[str]:
        async def write(conn: psycopg.AsyncConnection[Any]) -> list[str]:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (REGISTRATION_LOCK,))
                written = registration_rows(await self._rows(conn), metadata)
                for row in written:
                    await conn.execute(
                        "INSERT INTO model_replicas VALUES (%s, %s, %s, %s) ON CONFLICT (model_id, endpoint) "
                        "DO UPDATE SET metadata = EXCLUDED.metadata, registered_seq = EXCLUDED.registered_seq",
                        (row.metadata.model_id, row.metadata.endpoint, metadata_json(row.metadata), row.registered_seq),
                    )
                await self._changed(conn)
            return [row.metadata.model_id for row in written[:-1]]

        demoted: list[str] = await self._run(write)
        return demoted

    async def deregister(self, model_id: str, endpoint: str) -> None:
        async def write(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():
                await conn.execute(
                    "DELETE FROM model_replicas WHERE model_id = %s AND endpoint = %s", (model_id, endpoint)
                )
                await self._changed(conn)

        await self._run(write)

    @staticmethod
    async def _changed(conn: psycopg.AsyncConnection[Any]) -> None:
        """Inside the writing transaction: the version bump and the notification commit with the change."""
        await conn.execute("UPDATE registry_version SET version = version + 1 WHERE id = 1")
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, Event("changed").payload()))

    async def publish_load(self, model_id: str, endpoint: str, in_flight: int) -> None:
        event = Event("load", model_id, endpoint, in_flight)

        async def notify(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, event.payload()))

        await self._run(notify)

    async def listen(self, handler: EventHandler) -> None:
        """Deliver every notification to `handler`, forever; a lost connection is reopened, and the handler gets a
        `connected` event after each (re)connect, since notifications sent meanwhile are gone."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await handler(Event("connected"))
                    async for notification in conn.notifies():
                        await handler(Event.parse(notification.payload))
            except Exception as error:  # a restart, a network cut, a sync that failed meanwhile: listen again
                log.warning("registry notifications lost (%s); listening again", error)
            await asyncio.sleep(LISTEN_RETRY_S)

    async def close(self) -> None:
        await self._db.close()
