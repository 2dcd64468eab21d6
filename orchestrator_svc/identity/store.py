"""Where API keys persist: the registry's database (SQLite or PostgreSQL), one table with versioned migrations."""

import time
from pathlib import Path
from typing import Any

import aiosqlite
import psycopg

from orchestrator_svc.database import PgConnection, is_postgres, migrate, sqlite_path
from orchestrator_svc.identity.keys import KeyRecord, Role

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
COLUMNS = "key_id, tenant, role, secret_hash, created_at, revoked_at"


def _record(row: tuple[Any, ...]) -> KeyRecord:
    key_id, tenant, role, secret_hash, created_at, revoked_at = row
    return KeyRecord(key_id, tenant, Role(role), secret_hash, float(created_at), revoked_at)


class KeyStore:
    """The same statements on both backends: written with `?` and rewritten to psycopg's `%s` for PostgreSQL."""

    def __init__(self, sqlite: aiosqlite.Connection | None, postgres: PgConnection | None) -> None:
        self._sqlite = sqlite
        self._postgres = postgres

    @classmethod
    async def open(cls, database_url: str) -> "KeyStore":
        await migrate(database_url, MIGRATIONS)
        if is_postgres(database_url):
            return cls(None, PgConnection(database_url))
        return cls(await aiosqlite.connect(sqlite_path(database_url)), None)

    async def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._postgres is not None:

            async def run(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
                cursor = await conn.execute(sql.replace("?", "%s"), params)
                return list(await cursor.fetchall()) if cursor.description else []

            rows: list[tuple[Any, ...]] = await self._postgres.run(run)
            return rows
        assert self._sqlite is not None
        async with self._sqlite.execute(sql, params) as cursor:
            fetched: list[tuple[Any, ...]] = [tuple(row) for row in await cursor.fetchall()]
        await self._sqlite.commit()
        return fetched

    async def add(self, key_id: str, tenant: str, role: Role, secret_hash: str) -> KeyRecord:
        record = KeyRecord(key_id, tenant, role, secret_hash, time.time())
        await self._execute(
            f"INSERT INTO api_keys ({COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL)",
            (key_id, tenant, role.value, secret_hash, record.created_at),
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
