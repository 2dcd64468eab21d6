"""The orchestrator's shared database: which backend a URL names, and its versioned migrations (yoyo), so the
registry and the retrieval tables have one schema history on SQLite and on PostgreSQL alike."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
from yoyo import get_backend, read_migrations

T = TypeVar("T")
log = logging.getLogger(__name__)
MIGRATION_ATTEMPTS = 20  # about 20 s: PostgreSQL may still be starting, or another replica migrating


def is_postgres(database_url: str) -> bool:
    return urlsplit(database_url).scheme in ("postgresql", "postgres")


def sqlite_path(database_url: str) -> Path:
    """`sqlite:///data/registry.db` is relative to the working directory; `sqlite:////abs/file.db` is absolute."""
    return Path(database_url.removeprefix("sqlite:///"))


def _yoyo_url(database_url: str) -> str:
    rest = database_url.split("://", 1)[1]
    return f"postgresql+psycopg://{rest}" if is_postgres(database_url) else database_url


def _migrate(database_url: str, directory: Path) -> None:
    backend = get_backend(_yoyo_url(database_url))
    try:
        with backend.lock():
            backend.apply_migrations(backend.to_apply(read_migrations(str(directory))))
    finally:
        backend.connection.close()


async def migrate(database_url: str, directory: Path) -> None:
    """Apply `directory`'s pending migrations; yoyo's lock serialises replicas that start together, and a loser of
    the race to create yoyo's own tables (or a database still starting) simply tries again."""
    if not is_postgres(database_url):
        if not database_url.startswith("sqlite:///"):
            raise ValueError(f"database URL must be sqlite:///… or postgresql://…, not {database_url!r}")
        sqlite_path(database_url).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, MIGRATION_ATTEMPTS + 1):
        try:
            await asyncio.to_thread(_migrate, database_url, directory)
            return
        except Exception as error:
            if attempt == MIGRATION_ATTEMPTS:
                raise
            log.warning("migrating %s: attempt %d failed (%s); retrying", directory.name, attempt, error)
            await asyncio.sleep(1.0)


Work = Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]


class PgConnection:
    """One PostgreSQL connection used by one component, a statement or transaction at a time; a connection lost to
    a database restart is reopened once per call, so a restarted PostgreSQL costs one failed call at most."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True, connect_timeout=5)
        return self._conn

    async def run(self, work: Work[T]) -> T:
        async with self._lock:
            try:
                return await work(await self._connection())
            except psycopg.OperationalError:
                if self._conn is not None and not self._conn.broken:
                    raise
                log.warning("database connection lost; reconnecting")
                return await work(await self._connection())

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
