"""Open a vector store by kind, so configuration picks the backend and nothing else needs to know which."""

from pathlib import Path
from typing import Literal

from orchestrator_svc.retrieval.vectorstore.base import VectorStore

StoreKind = Literal["memory", "sqlite", "lancedb", "postgres"]


async def open_store(
    kind: StoreKind, path: Path | None = None, index_threshold: int | None = None, database_url: str = ""
) -> VectorStore:
    """`path` is the SQLite file or the LanceDB directory; `database_url` the PostgreSQL of `postgres`; memory
    needs neither."""
    if kind == "memory":
        from orchestrator_svc.retrieval.vectorstore.memory import MemoryStore

        return MemoryStore()
    if kind == "postgres":
        from orchestrator_svc.retrieval.vectorstore.postgres import PostgresVectorStore

        if not database_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("the postgres vector store needs a postgresql:// database URL")
        return await PostgresVectorStore.open(database_url)
    if path is None:
        raise ValueError(f"the {kind} store needs a path")
    if kind == "sqlite":
        from orchestrator_svc.retrieval.vectorstore.sqlite import SqliteStore

        return await SqliteStore.open(path)
    if kind == "lancedb":
        from orchestrator_svc.retrieval.vectorstore.lancedb_store import DEFAULT_INDEX_THRESHOLD, LanceDbStore

        return await LanceDbStore.open(path, DEFAULT_INDEX_THRESHOLD if index_threshold is None else index_threshold)
    raise ValueError(f"unknown vector store kind {kind!r}")
