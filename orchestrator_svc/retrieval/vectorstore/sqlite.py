"""SQLite vector store through aiosqlite: float32 blobs on disk, exact cosine search with numpy over a cached matrix,
and BM25 keyword search through an FTS5 index that triggers keep in step with the chunks."""

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import numpy as np
import numpy.typing as npt

from orchestrator_svc.retrieval.vectorstore.base import (
    DEFAULT_DIMENSION,
    ChunkRecord,
    CollectionInfo,
    Matrix,
    ScoredChunk,
    VectorStore,
    check_chunks,
    check_dimension,
    check_name,
    check_top_k,
    duplicate_collection,
    missing_collection,
    query_words,
    top_k_rows,
    unit_rows,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (name TEXT PRIMARY KEY, dimension INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    document_id TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (collection, id)
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (collection, document_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, content='chunks', content_rowid='rowid', tokenize='porter unicode61'
);
CREATE TRIGGER IF NOT EXISTS chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts (rowid, text) VALUES (new.rowid, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', old.rowid, old.text);
END;
"""
# FTS5's bm25() is lower for better matches; ties keep rowid order so results are deterministic.
KEYWORD_QUERY = """
SELECT c.id, c.document_id, c.text, c.metadata, -bm25(chunks_fts) AS score
FROM chunks_fts JOIN chunks c ON c.rowid = chunks_fts.rowid
WHERE chunks_fts MATCH ? AND c.collection = ?
ORDER BY score DESC, c.rowid LIMIT ?
"""
DELETE_DOCUMENT = "DELETE FROM chunks WHERE collection = ? AND document_id = ?"
INSERT_CHUNK = "INSERT INTO chunks (collection, id, document_id, text, metadata, vector) VALUES (?, ?, ?, ?, ?, ?)"


@dataclass
class _Matrix:
    """A collection's vectors held in memory; valid while the database's data_version is unchanged."""

    data_version: int
    rowids: npt.NDArray[np.int64]
    matrix: Matrix


class SqliteStore(VectorStore):
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection
        self._cache: dict[str, _Matrix] = {}

    @classmethod
    async def open(cls, path: Path) -> "SqliteStore":
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path)
        # WAL lets the API read while an ingestion writes; busy_timeout waits out a writer in another process.
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("PRAGMA busy_timeout=5000")
        had_index = bool(
            list(await connection.execute_fetchall("SELECT 1 FROM sqlite_master WHERE name = 'chunks_fts'"))
        )
        await connection.executescript(SCHEMA)
        if not had_index:  # a database from before full-text search: index the chunks it already holds
            await connection.execute("INSERT INTO chunks_fts (chunks_fts) VALUES ('rebuild')")
        await connection.commit()
        return cls(connection)

    supports_keyword = True

    async def close(self) -> None:
        await self._db.close()

    async def create_collection(self, name: str, dimension: int = DEFAULT_DIMENSION) -> CollectionInfo:
        check_name(name)
        check_dimension(dimension)
        cursor = await self._db.execute(
            "INSERT INTO collections (name, dimension) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", (name, dimension)
        )
        await self._db.commit()
        if cursor.rowcount == 0:
            raise duplicate_collection(name)
        return CollectionInfo(name, dimension, 0, 0)

    async def list_collections(self) -> list[CollectionInfo]:
        rows = await self._db.execute_fetchall(
            "SELECT c.name, c.dimension, COUNT(DISTINCT k.document_id), COUNT(k.id) "
            "FROM collections c LEFT JOIN chunks k ON k.collection = c.name GROUP BY c.name ORDER BY c.name"
        )
        return [CollectionInfo(*row) for row in rows]

    async def get_collection(self, name: str) -> CollectionInfo:
        dimension = await self._dimension(name)
        rows = list(
            await self._db.execute_fetchall(
                "SELECT COUNT(DISTINCT document_id), COUNT(*) FROM chunks WHERE collection = ?", (name,)
            )
        )
        documents, chunks = rows[0]
        return CollectionInfo(name, dimension, documents, chunks)

    async def delete_collection(self, name: str) -> None:
        await self._dimension(name)
        await self._db.execute("DELETE FROM chunks WHERE collection = ?", (name,))
        await self._db.execute("DELETE FROM collections WHERE name = ?", (name,))
        await self._db.commit()
        self._cache.pop(name, None)

    async def upsert_document(self, collection: str, document_id: str, chunks: Sequence[ChunkRecord]) -> int:
        check_chunks(document_id, chunks)
        dimension = await self._dimension(collection)
        vectors = unit_rows([chunk.vector for chunk in chunks], dimension, "chunks.vector")
        rows = [
            (collection, chunk.id, document_id, chunk.text, json.dumps(dict(chunk.metadata)), vectors[i].tobytes())
            for i, chunk in enumerate(chunks)
        ]
        # One transaction: readers see either the old chunks or the new ones, never both or neither.
        try:
            await self._db.execute(
                "DELETE FROM chunks WHERE collection = ? AND document_id = ?", (collection, document_id)
            )
            await self._db.executemany(
                "INSERT INTO chunks (collection, id, document_id, text, metadata, vector) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            await self._db.commit()
        except BaseException:
            await self._db.rollback()
            raise
        self._cache.pop(collection, None)
        return len(rows)

    async def delete_document(self, collection: str, document_id: str) -> int:
        await self._dimension(collection)
        cursor = await self._db.execute(DELETE_DOCUMENT, (collection, document_id))
        await self._db.commit()
        self._cache.pop(collection, None)
        return cursor.rowcount

    async def query(
        self, collection: str, vector: Sequence[float], top_k: int, exact: bool = False
    ) -> list[ScoredChunk]:
        check_top_k(top_k)
        dimension = await self._dimension(collection)
        query = unit_rows(vector, dimension, "vector")
        cached = await self._matrix(collection, dimension)
        indices, scores = top_k_rows(cached.matrix, query, top_k)
        rowids = [int(cached.rowids[i]) for i in indices]
        if not rowids:
            return []
        placeholders = ",".join("?" * len(rowids))
        found = {
            row[0]: row[1:]
            for row in await self._db.execute_fetchall(
                f"SELECT rowid, id, document_id, text, metadata FROM chunks WHERE rowid IN ({placeholders})", rowids
            )
        }
        return [
            ScoredChunk(found[r][0], found[r][1], found[r][2], float(s), json.loads(found[r][3]))
            for r, s in zip(rowids, scores, strict=True)
            if r in found
        ]

    async def keyword_query(self, collection: str, text: str, top_k: int) -> list[ScoredChunk]:
        check_top_k(top_k)
        await self._dimension(collection)
        words = query_words(text)
        if not words:
            return []
        match = " OR ".join(f'"{word}"' for word in words)
        rows = await self._db.execute_fetchall(KEYWORD_QUERY, (match, collection, top_k))
        return [ScoredChunk(i, d, t, float(s), json.loads(m)) for i, d, t, m, s in rows]

    async def _matrix(self, collection: str, dimension: int) -> _Matrix:
        version = await self._data_version()
        cached = self._cache.get(collection)
        if cached is not None and cached.data_version == version:
            return cached
        rows = list(
            await self._db.execute_fetchall("SELECT rowid, vector FROM chunks WHERE collection = ?", (collection,))
        )
        rowids = np.array([row[0] for row in rows], dtype=np.int64)
        blob = b"".join(row[1] for row in rows)
        matrix = np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dimension)
        cached = _Matrix(version, rowids, matrix)
        self._cache[collection] = cached
        return cached

    async def _data_version(self) -> int:
        """Changes when another connection commits, so a cache never serves another process's stale data."""
        rows = list(await self._db.execute_fetchall("PRAGMA data_version"))
        return int(rows[0][0])

    async def _dimension(self, name: str) -> int:
        rows = list(await self._db.execute_fetchall("SELECT dimension FROM collections WHERE name = ?", (name,)))
        if not rows:
            raise missing_collection(name)
        return int(rows[0][0])
