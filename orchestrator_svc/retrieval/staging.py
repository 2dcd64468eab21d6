"""Claim-check storage for ingestion: documents wait here, and only their ids travel through workflow history.

Temporal payloads are limited to a few MB, while one Ingest call may carry many MB of text.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

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


class Staging:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> "Staging":
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
