"""The stores the API and the worker share: vector store, ingestion staging and the embedding client."""

from dataclasses import dataclass

from orchestrator_svc.config import OrchestratorSettings
from orchestrator_svc.retrieval.embedding_client import EmbeddingClient
from orchestrator_svc.retrieval.staging import Staging
from orchestrator_svc.retrieval.vectorstore.base import VectorStore
from orchestrator_svc.retrieval.vectorstore.factory import open_store


@dataclass
class Resources:
    store: VectorStore
    staging: Staging
    embeddings: EmbeddingClient

    @classmethod
    async def open(cls, settings: OrchestratorSettings) -> "Resources":
        store = await open_store(settings.vector_store, settings.vector_path)
        return cls(store, await Staging.open(settings.staging_db), EmbeddingClient(settings.embedding_address))

    async def close(self) -> None:
        await self.embeddings.close()
        await self.staging.close()
        await self.store.close()
