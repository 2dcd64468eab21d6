"""Where API keys persist: the registry's database (SQLite or PostgreSQL), one table with versioned migrations."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import psycopg

from orchestrator_svc.database import PgConnection, is_postgres, migrate, sqlite_path
from orchestrator_svc.identity.keys import KeyPolicy, KeyRecord, PriorityClass, Role

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
T = TypeVar("T")
Rows = list[tuple[Any, ...]]
Execute = Callable[[str, tuple[Any, ...]], Awaitable[Rows]]
COLUMNS = (
    "key_id, tenant, role, secret_hash, created_at, revoked_at, "
    "default_class, fairness_weight, requests_per_minute, tokens_per_minute, max_concurrent"
)


def _record(row: tuple[Any, ...]) -> KeyRecord:
    key_id, tenant, role, secret_hash, created_at, revoked_at, default_class, weight, rpm, tpm, concurrent = row
    policy = KeyPolicy(PriorityClass(default_class), float(weight), int(rpm), int(tpm), int(concurrent))
    return KeyRecord(key_id, tenant, Role(role), secret_hash, float(created_at), revoked_at, policy)


class KeyStore:
    """The same statements on both backends: written with `?` and rewritten to psycopg's `%s` for PostgreSQL."""

    def __init__(self, sqlite: aiosqlite.Connection | None, postgres: PgConnection | None) -> None:
        self._sqlite = sqlite
        self._postgres = postgres
        self._sqlite_lock = asyncio.Lock()  # one SQLite connection: a transaction must not interleave with a write

    @classmethod
    async def open(cls, database_url: str) -> "KeyStore":
        await migrate(database_url, MIGRATIONS)
        if is_postgres(database_url):
            return cls(None, PgConnection(database_url))
        return cls(await aiosqlite.connect(sqlite_path(database_url)), None)

    async def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> Rows:
        """One statement, committed on its own."""
        return await self.transaction(lambda execute: execute(sql, params))

    async def transaction(self, work: Callable[[Execute], Awaitable[T]], lock: str = "") -> T:
        """Run `work` in one transaction; with `lock`, also serialised against every other transaction taking the
        same lock (a PostgreSQL advisory lock; SQLite's BEGIN IMMEDIATE serialises every writer anyway)."""
        if self._postgres is not None:

            async def run(conn: psycopg.AsyncConnection[Any]) -> T:
                async def execute(sql: str, params: tuple[Any, ...] = ()) -> Rows:
                    cursor = await conn.execute(sql.replace("?", "%s"), params)
                    return list(await cursor.fetchall()) if cursor.description else []

                async with conn.transaction():
                    if lock:
                        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
                    return await work(execute)

            result: T = await self._postgres.run(run)
            return result
        db = self._sqlite
        assert db is not None

        async def execute_sqlite(sql: str, params: tuple[Any, ...] = ()) -> Rows:
            async with db.execute(sql, params) as cursor:
                return [tuple(row) for row in await cursor.fetchall()]

        async with self._sqlite_lock:
            await db.execute("BEGIN IMMEDIATE")
            try:
                outcome = await work(execute_sqlite)
            except BaseException:
                await db.rollback()
                raise
            await db.commit()
            return outcome

    async def add(self, key_id: str, tenant: str, role: Role, secret_hash: str, policy: KeyPolicy) -> KeyRecord:
        record = KeyRecord(key_id, tenant, role, secret_hash, time.time(), None, policy)
        await self._execute(
            f"INSERT INTO api_keys ({COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?)",
            (
                key_id,
                tenant,
                role.value,
                secret_hash,
                record.created_at,
                policy.default_class.value,
                policy.fairness_weight,
                policy.requests_per_minute,
                policy.tokens_per_minute,
                policy.max_concurrent,
            ),
        )
        return record

    async def get(self, key_id: str) -> KeyRecord | None:
        rows = await self._execute(f"SELECT {COLUMNS} FROM api_keys WHERE key_id = ?", (key_id,))
        return _record(rows[0]) if rows else None

    async def list(self, tenant: str | None = None) -> list[KeyRecord]:
        where, params = ("", ()) if tenant is None else ("WHERE tenant = ?", (tenant,))
        rows = await self._execute(f"SELECT {COLUMNS} FROM api_keys {where} ORDER BY created_at", params)
        return [_record(row) for row in rows]

    async def revoke(self, key_id: str) -> bool:
        """True if the key existed and was live; revoking twice keeps the first revocation time."""
        rows = await self._execute(
            "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL RETURNING key_id",
            (time.time(), key_id),
        )
        return bool(rows)

    async def close(self) -> None:
        if self._sqlite is not None:
            await self._sqlite.close()
        if self._postgres is not None:
            await self._postgres.close()
