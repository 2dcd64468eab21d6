"""Retrieval's rules, without gRPC: collections, durable ingestion through IngestionWorkflow, and search."""

import re
import uuid
from dataclasses import dataclass
from enum import StrEnum

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from llmorch_common.errors import FieldViolation, invalid_argument, not_found
from orchestrator_svc.retrieval.embedding_client import EmbeddingClient
from orchestrator_svc.retrieval.ingestion import PROGRESS_QUERY, IngestionInput, IngestionProgress, IngestionWorkflow
from orchestrator_svc.retrieval.staging import StagedDocument, Staging
from orchestrator_svc.retrieval.vectorstore.base import (
    CollectionInfo,
    ScoredChunk,
    VectorStore,
    scoped_collection,
    unscoped_collection,
)

MAX_DOCUMENT_CHARS = 2_000_000
MAX_DOCUMENTS = 1000
MAX_QUERY_CHARS = 20_000
INGESTION_PREFIX = "ingest-"
PUBLIC_COLLECTION_NAME = re.compile(r"^[a-z0-9_-]{1,64}$")


class IngestionState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class IngestionStatus:
    state: IngestionState
    progress: IngestionProgress
    error: str = ""


class RetrievalService:
    def __init__(
        self, client: Client, task_queue: str, store: VectorStore, staging: Staging, embeddings: EmbeddingClient
    ) -> None:
        self._client = client
        self._task_queue = task_queue
        self.store = store
        self._staging = staging
        self._embeddings = embeddings

    async def create_collection(self, tenant: str, name: str) -> CollectionInfo:
        if not PUBLIC_COLLECTION_NAME.fullmatch(name):
            raise invalid_argument([FieldViolation("name", "must be 1 to 64 characters of [a-z0-9_-]")])
        return await self.store.create_collection(scoped_collection(tenant, name))

    async def list_collections(self, tenant: str, all_tenants: bool = False) -> list[CollectionInfo]:
        """The tenant's own collections, or with `all_tenants` (an admin's call) every tenant's; stored names."""
        infos = await self.store.list_collections()
        return [info for info in infos if all_tenants or unscoped_collection(info.name)[0] == tenant]

    async def delete_collection(self, tenant: str, name: str) -> None:
        await self.store.delete_collection(scoped_collection(tenant, name))

    async def ingest(self, tenant: str, collection: str, documents: list[StagedDocument]) -> str:
        """Stage the documents and start their ingestion workflow; returns its id, which names the tenant."""
        stored = scoped_collection(tenant, collection)
        await self.store.get_collection(stored)  # NOT_FOUND before anything is staged
        ingestion_id = f"{INGESTION_PREFIX}{tenant}.{uuid.uuid4().hex}"
        await self._staging.put(ingestion_id, documents)
        await self._client.start_workflow(
            IngestionWorkflow.run,
            IngestionInput(ingestion_id, stored, tuple(d.document_id for d in documents)),
            id=ingestion_id,
            task_queue=self._task_queue,
        )
        return ingestion_id

    async def ingestion(self, tenant: str, ingestion_id: str) -> IngestionStatus:
        """Another tenant's ingestion is NOT_FOUND, as one that never existed."""
        missing = not_found(f"no ingestion {ingestion_id!r}")
        if not ingestion_id.startswith(f"{INGESTION_PREFIX}{tenant}."):
            raise missing
        handle = self._client.get_workflow_handle_for(IngestionWorkflow.run, ingestion_id)
        try:
            description = await handle.describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise missing from None
            raise
        if description.status == WorkflowExecutionStatus.RUNNING:
            progress = await handle.query(PROGRESS_QUERY, result_type=IngestionProgress)
            return IngestionStatus(IngestionState.RUNNING, progress)
        try:
            return IngestionStatus(IngestionState.COMPLETED, await handle.result())
        except WorkflowFailureError as error:
            return IngestionStatus(IngestionState.FAILED, IngestionProgress(0, 0, 0), str(error.cause))

    async def query(self, tenant: str, collection: str, text: str, top_k: int) -> list[ScoredChunk]:
        stored = scoped_collection(tenant, collection)
        await self.store.get_collection(stored)
        [vector] = await self._embeddings.embed([text])
        return await self.store.query(stored, vector, top_k)
