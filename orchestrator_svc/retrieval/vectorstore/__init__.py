"""Vector stores behind one async interface: memory (tests, demo), sqlite (aiosqlite) and lancedb (default, ANN)."""

from orchestrator_svc.retrieval.vectorstore.base import ChunkRecord, CollectionInfo, ScoredChunk, VectorStore
from orchestrator_svc.retrieval.vectorstore.factory import StoreKind, open_store

__all__ = ["ChunkRecord", "CollectionInfo", "ScoredChunk", "StoreKind", "VectorStore", "open_store"]
