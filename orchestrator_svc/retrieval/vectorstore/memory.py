"""In-process vector store for tests and the demo: exact cosine search with numpy, nothing persisted."""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

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
    top_k_rows,
    unit_rows,
)


@dataclass
class _Collection:
    dimension: int
    documents: dict[str, list[tuple[ChunkRecord, Matrix]]] = field(default_factory=dict)
    # Rebuilt lazily after a write, so a burst of upserts costs one stack, not one per upsert.
    _flat: tuple[list[tuple[str, ChunkRecord]], Matrix] | None = None

    def flat(self) -> tuple[list[tuple[str, ChunkRecord]], Matrix]:
        if self._flat is None:
            rows = [(doc_id, chunk) for doc_id, chunks in self.documents.items() for chunk, _ in chunks]
            vectors = [vector for chunks in self.documents.values() for _, vector in chunks]
            matrix = np.vstack(vectors) if vectors else np.empty((0, self.dimension), dtype=np.float32)
            self._flat = (rows, matrix)
        return self._flat

    def info(self, name: str) -> CollectionInfo:
        chunk_count = sum(len(chunks) for chunks in self.documents.values())
        return CollectionInfo(name, self.dimension, len(self.documents), chunk_count)


class MemoryStore(VectorStore):
    def __init__(self) -> None:
        self._collections: dict[str, _Collection] = {}
        self._lock = asyncio.Lock()

    async def create_collection(self, name: str, dimension: int = DEFAULT_DIMENSION) -> CollectionInfo:
        check_name(name)
        check_dimension(dimension)
        async with self._lock:
            if name in self._collections:
                raise duplicate_collection(name)
            self._collections[name] = _Collection(dimension)
            return self._collections[name].info(name)

    async def list_collections(self) -> list[CollectionInfo]:
        return [self._collections[name].info(name) for name in sorted(self._collections)]

    async def get_collection(self, name: str) -> CollectionInfo:
        return self._get(name).info(name)

    async def delete_collection(self, name: str) -> None:
        async with self._lock:
            self._get(name)
            del self._collections[name]

    async def upsert_document(self, collection: str, document_id: str, chunks: Sequence[ChunkRecord]) -> int:
        check_chunks(document_id, chunks)
        target = self._get(collection)
        vectors = unit_rows([chunk.vector for chunk in chunks], target.dimension, "chunks.vector")
        async with self._lock:
            target.documents.pop(document_id, None)
            if chunks:
                target.documents[document_id] = [(chunk, vectors[i]) for i, chunk in enumerate(chunks)]
            target._flat = None
        return len(chunks)

    async def delete_document(self, collection: str, document_id: str) -> int:
        target = self._get(collection)
        async with self._lock:
            removed = target.documents.pop(document_id, [])
            target._flat = None
        return len(removed)

    async def query(
        self, collection: str, vector: Sequence[float], top_k: int, exact: bool = False
    ) -> list[ScoredChunk]:
        check_top_k(top_k)
        target = self._get(collection)
        query = unit_rows(vector, target.dimension, "vector")
        rows, matrix = target.flat()
        indices, scores = top_k_rows(matrix, query, top_k)
        return [
            ScoredChunk(rows[i][1].id, rows[i][0], rows[i][1].text, float(score), dict(rows[i][1].metadata))
            for i, score in zip(indices, scores, strict=True)
        ]

    async def close(self) -> None:
        self._collections.clear()

    def _get(self, name: str) -> _Collection:
        found = self._collections.get(name)
        if found is None:
            raise missing_collection(name)
        return found
