"""Claim-check storage for ingestion: documents wait here, and only their ids travel through workflow history.

Temporal payloads are limited to a few MB, while one Ingest call may carry many MB of text.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
import psycopg

from orchestrator_svc.database import PgConnection, migrate

MIGRATIONS = Path(__file__).resolve().parent / "migrations"  # PostgreSQL's tables; SQLite's are below
SCHEMA = """
CREATE TABLE IF NOT EXISTS staged_documents (
    ingestion_id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    PRIMARY KEY (ingestion_id, document_id)
)
"""


@dataclass(frozen=True)
class StagedDocument:
    document_id: str
    text: str
    metadata: dict[str, str]


class Staging(Protocol):
    """Where an Ingest call's documents wait for the ingestion activities, which may run in another pod."""

    async def put(self, ingestion_id: str, documents: list[StagedDocument]) -> None: ...
    async def get(self, ingestion_id: str, document_id: str) -> StagedDocument | None: ...
    async def release(self, ingestion_id: str) -> None: ...
    async def close(self) -> None: ...


class SqliteStaging:
    """A file the API and the worker share: one machine, or one volume."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> "SqliteStaging":
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        await db.execute("PRAGMA journal_mode=WAL")  # the API writes while the worker reads
        await db.execute(SCHEMA)
        await db.commit()
        return cls(db)

    async def put(self, ingestion_id: str, documents: list[StagedDocument]) -> None:
        await self._db.executemany(
            "INSERT OR REPLACE INTO staged_documents VALUES (?, ?, ?, ?)",
            [(ingestion_id, d.document_id, d.text, json.dumps(d.metadata)) for d in documents],
        )
        await self._db.commit()

    async def get(self, ingestion_id: str, document_id: str) -> StagedDocument | None:
        async with self._db.execute(
            "SELECT text, metadata FROM staged_documents WHERE ingestion_id = ? AND document_id = ?",
            (ingestion_id, document_id),
        ) as rows:
            row = await rows.fetchone()
        return StagedDocument(document_id, row[0], json.loads(row[1])) if row else None

    async def release(self, ingestion_id: str) -> None:
        await self._db.execute("DELETE FROM staged_documents WHERE ingestion_id = ?", (ingestion_id,))
        await self._db.commit()

    async def close(self) -> None:
        await self._db.close()


class PostgresStaging:
    """The cluster's PostgreSQL (ADR 0012): an API replica stages, any worker's activity reads, no disk is shared."""

    def __init__(self, db: PgConnection) -> None:
        self._db = db

    @classmethod
    async def open(cls, url: str) -> "PostgresStaging":
        await migrate(url, MIGRATIONS)
        return cls(PgConnection(url))

    async def put(self, ingestion_id: str, documents: list[StagedDocument]) -> None:
        rows = [(ingestion_id, d.document_id, d.text, json.dumps(d.metadata)) for d in documents]

        async def write(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO staged_documents VALUES (%s, %s, %s, %s) ON CONFLICT (ingestion_id, document_id) "
                    "DO UPDATE SET text = EXCLUDED.text, metadata = EXCLUDED.metadata",
                    rows,
                )

        await self._db.run(write)

    async def get(self, ingestion_id: str, document_id: str) -> StagedDocument | None:
        async def read(conn: psycopg.AsyncConnection[Any]) -> StagedDocument | None:
            cursor = await conn.execute(
                "SELECT text, metadata FROM staged_documents WHERE ingestion_id = %s AND document_id = %s",
                (ingestion_id, document_id),
            )
            row = await cursor.fetchone()
            return StagedDocument(document_id, row[0], json.loads(row[1])) if row else None

        return await self._db.run(read)

    async def release(self, ingestion_id: str) -> None:
        async def delete(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute("DELETE FROM staged_documents WHERE ingestion_id = %s", (ingestion_id,))

        await self._db.run(delete)

    async def close(self) -> None:
        await self._db.close()
