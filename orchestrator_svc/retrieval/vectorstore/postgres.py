"""PostgreSQL vector store: retrieval state that no pod owns (ADR 0012). Chunks and float32 vectors live in the
cluster's database; each pod searches exactly with numpy over a per-collection matrix it reloads only when the
collection's version changed, so every API replica and worker sees every ingestion at once, with no shared disk.
Keyword search is PostgreSQL's own full text: a generated tsvector column with a GIN index, ranked by ts_rank."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from orchestrator_svc.database import PgConnection, migrate
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

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
Conn = psycopg.AsyncConnection[Any]
# websearch_to_tsquery never raises on user text; its "or" makes any query word enough, as BM25 does.
KEYWORD_QUERY = """
SELECT id, document_id, text, metadata, ts_rank(tsv, q) AS score
FROM vector_chunks, websearch_to_tsquery('english', %s) AS q
WHERE collection = %s AND tsv @@ q
ORDER BY score DESC, id LIMIT %s
"""


@dataclass
class _Matrix:
    version: int
    ids: list[str]
    matrix: Matrix


class PostgresVectorStore(VectorStore):
    def __init__(self, db: PgConnection) -> None:
        self._db = db
        self._cache: dict[str, _Matrix] = {}

    @classmethod
    async def open(cls, url: str) -> "PostgresVectorStore":
        await migrate(url, MIGRATIONS)
        return cls(PgConnection(url))

    async def close(self) -> None:
        await self._db.close()

    async def create_collection(self, name: str, dimension: int = DEFAULT_DIMENSION) -> CollectionInfo:
        check_name(name)
        check_dimension(dimension)

        async def create(conn: Conn) -> int:
            cursor = await conn.execute(
                "INSERT INTO vector_collections (name, dimension) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
                (name, dimension),
            )
            return cursor.rowcount

        if await self._db.run(create) == 0:
            raise duplicate_collection(name)
        return CollectionInfo(name, dimension, 0, 0)

    async def list_collections(self) -> list[CollectionInfo]:
        async def read(conn: Conn) -> list[CollectionInfo]:
            cursor = await conn.execute(
                "SELECT c.name, c.dimension, COUNT(DISTINCT k.document_id), COUNT(k.id) FROM vector_collections c "
                "LEFT JOIN vector_chunks k ON k.collection = c.name GROUP BY c.name, c.dimension ORDER BY c.name"
            )
            return [
                CollectionInfo(str(n), int(d), int(docs), int(chunks)) for n, d, docs, chunks in await cursor.fetchall()
            ]

        return await self._db.run(read)

    async def get_collection(self, name: str) -> CollectionInfo:
        dimension, _ = await self._collection(name)

        async def read(conn: Conn) -> tuple[int, int]:
            cursor = await conn.execute(
                "SELECT COUNT(DISTINCT document_id), COUNT(*) FROM vector_chunks WHERE collection = %s", (name,)
            )
            row = await cursor.fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

        documents, chunks = await self._db.run(read)
        return CollectionInfo(name, dimension, documents, chunks)

    async def delete_collection(self, name: str) -> None:
        async def delete(conn: Conn) -> int:
            cursor = await conn.execute("DELETE FROM vector_collections WHERE name = %s", (name,))
            return cursor.rowcount

        if await self._db.run(delete) == 0:
            raise missing_collection(name)
        self._cache.pop(name, None)

    async def upsert_document(self, collection: str, document_id: str, chunks: Sequence[ChunkRecord]) -> int:
        check_chunks(document_id, chunks)
        dimension, _ = await self._collection(collection)
        vectors = unit_rows([chunk.vector for chunk in chunks], dimension, "chunks.vector")
        rows = [
            (collection, chunk.id, document_id, chunk.text, json.dumps(dict(chunk.metadata)), vectors[i].tobytes())
            for i, chunk in enumerate(chunks)
        ]

        async def write(conn: Conn) -> None:
            # One transaction: readers see either the old chunks or the new ones, never both or neither.
            async with conn.transaction():
                await self._bump(conn, collection)
                await conn.execute(
                    "DELETE FROM vector_chunks WHERE collection = %s AND document_id = %s", (collection, document_id)
                )
                async with conn.cursor() as cursor:
                    await cursor.executemany(
                        "INSERT INTO vector_chunks (collection, id, document_id, text, metadata, vector) "
                        "VALUES (%s, %s, %s, %s, %s, %s)",
                        rows,
                    )

        await self._db.run(write)
        return len(rows)

    async def delete_document(self, collection: str, document_id: str) -> int:
        await self._collection(collection)

        async def delete(conn: Conn) -> int:
            async with conn.transaction():
                await self._bump(conn, collection)
                cursor = await conn.execute(
                    "DELETE FROM vector_chunks WHERE collection = %s AND document_id = %s", (collection, document_id)
                )
                return cursor.rowcount

        return await self._db.run(delete)

    async def query(
        self, collection: str, vector: Sequence[float], top_k: int, exact: bool = False
    ) -> list[ScoredChunk]:
        check_top_k(top_k)
        dimension, version = await self._collection(collection)
        query = unit_rows(vector, dimension, "vector")
        cached = await self._matrix(collection, dimension, version)
        indices, scores = top_k_rows(cached.matrix, query, top_k)
        ids = [cached.ids[i] for i in indices]
        if not ids:
            return []

        async def read(conn: Conn) -> dict[str, tuple[str, str, str]]:
            cursor = await conn.execute(
                "SELECT id, document_id, text, metadata FROM vector_chunks WHERE collection = %s AND id = ANY(%s)",
                (collection, ids),
            )
            return {row[0]: (row[1], row[2], row[3]) for row in await cursor.fetchall()}

        found = await self._db.run(read)
        return [
            ScoredChunk(i, found[i][0], found[i][1], float(s), json.loads(found[i][2]))
            for i, s in zip(ids, scores, strict=True)
            if i in found
        ]

    supports_keyword = True

    async def keyword_query(self, collection: str, text: str, top_k: int) -> list[ScoredChunk]:
        check_top_k(top_k)
        await self._collection(collection)
        words = query_words(text)
        if not words:
            return []

        async def read(conn: Conn) -> list[ScoredChunk]:
            cursor = await conn.execute(KEYWORD_QUERY, (" or ".join(words), collection, top_k))
            return [ScoredChunk(i, d, t, float(s), json.loads(m)) for i, d, t, m, s in await cursor.fetchall()]

        return await self._db.run(read)

    async def _matrix(self, collection: str, dimension: int, version: int) -> _Matrix:
        cached = self._cache.get(collection)
        if cached is not None and cached.version == version:
            return cached

        async def read(conn: Conn) -> tuple[int, list[tuple[str, bytes]]]:
            # Rows and version in one snapshot, so the cache is never newer or older than its label.
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cursor = await conn.execute("SELECT version FROM vector_collections WHERE name = %s", (collection,))
                row = await cursor.fetchone()
                cursor = await conn.execute(
                    "SELECT id, vector FROM vector_chunks WHERE collection = %s ORDER BY id", (collection,)
                )
                return (int(row[0]) if row else version), [(r[0], bytes(r[1])) for r in await cursor.fetchall()]

        loaded_version, rows = await self._db.run(read)
        blob = b"".join(vector for _, vector in rows)
        matrix = np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dimension)
        cached = _Matrix(loaded_version, [row_id for row_id, _ in rows], matrix)
        self._cache[collection] = cached
        return cached

    @staticmethod
    async def _bump(conn: Conn, collection: str) -> None:
        await conn.execute("UPDATE vector_collections SET version = version + 1 WHERE name = %s", (collection,))

    async def _collection(self, name: str) -> tuple[int, int]:
        """(dimension, version); NOT_FOUND for an unknown collection."""

        async def read(conn: Conn) -> tuple[int, int] | None:
            cursor = await conn.execute("SELECT dimension, version FROM vector_collections WHERE name = %s", (name,))
            row = await cursor.fetchone()
            return (int(row[0]), int(row[1])) if row else None

        found = await self._db.run(read)
        if found is None:
            raise missing_collection(name)
        return found
