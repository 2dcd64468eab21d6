"""The stores the API and the worker share: vector store, ingestion staging and the embedding client."""

from dataclasses import dataclass

from llmorch_common.redis_cache import connect as redis_client
from orchestrator_svc.config import OrchestratorSettings
from orchestrator_svc.retrieval.embedding_cache import EmbeddingCache
from orchestrator_svc.retrieval.embedding_client import EmbeddingClient
from orchestrator_svc.retrieval.staging import PostgresStaging, SqliteStaging, Staging
from orchestrator_svc.retrieval.vectorstore.base import VectorStore
from orchestrator_svc.retrieval.vectorstore.factory import open_store


@dataclass
class Resources:
    store: VectorStore
    staging: Staging
    embeddings: EmbeddingClient

    @classmethod
    async def open(cls, settings: OrchestratorSettings) -> "Resources":
        """`postgres` keeps vectors and staged documents in the shared database: no pod owns them (ADR 0012)."""
        store = await open_store(settings.vector_store, settings.vector_path, database_url=settings.database_url)
        staging: Staging
        if settings.vector_store == "postgres":
            staging = await PostgresStaging.open(settings.database_url)
        else:
            staging = await SqliteStaging.open(settings.staging_db)
        cache = EmbeddingCache(redis_client(settings.redis_url), settings.cache_ttl_s) if settings.redis_url else None
        return cls(store, staging, EmbeddingClient(settings.embedding_address, cache))

    async def close(self) -> None:
        await self.embeddings.close()
        await self.staging.close()
        await self.store.close()
