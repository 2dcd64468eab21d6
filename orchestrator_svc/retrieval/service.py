"""Retrieval's rules, without gRPC: collections, durable ingestion through IngestionWorkflow, and search."""

import uuid
from dataclasses import dataclass
from enum import StrEnum

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from llmorch_common.errors import not_found
from orchestrator_svc.retrieval.chunking import Chunking
from orchestrator_svc.retrieval.embedding_client import EmbeddingClient
from orchestrator_svc.retrieval.ingestion import PROGRESS_QUERY, IngestionInput, IngestionProgress, IngestionWorkflow
from orchestrator_svc.retrieval.staging import StagedDocument, Staging
from orchestrator_svc.retrieval.vectorstore.base import CollectionInfo, RetrievalMode, ScoredChunk, VectorStore, search

MAX_DOCUMENT_CHARS = 2_000_000
MAX_DOCUMENTS = 1000
MAX_QUERY_CHARS = 20_000
INGESTION_PREFIX = "ingest-"


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
        self,
        client: Client,
        task_queue: str,
        store: VectorStore,
        staging: Staging,
        embeddings: EmbeddingClient,
        default_mode: RetrievalMode = RetrievalMode.DENSE,
    ) -> None:
        self.default_mode = default_mode
        self._client = client
        self._task_queue = task_queue
        self.store = store
        self._staging = staging
        self._embeddings = embeddings

    async def create_collection(self, name: str) -> CollectionInfo:
        return await self.store.create_collection(name)

    async def list_collections(self) -> list[CollectionInfo]:
        return await self.store.list_collections()

    async def delete_collection(self, name: str) -> None:
        await self.store.delete_collection(name)

    async def ingest(
        self, collection: str, documents: list[StagedDocument], chunking: Chunking = Chunking.SECTIONS
    ) -> str:
        """Stage the documents and start their ingestion workflow; returns its id."""
        await self.store.get_collection(collection)  # NOT_FOUND before anything is staged
        ingestion_id = INGESTION_PREFIX + uuid.uuid4().hex
        await self._staging.put(ingestion_id, documents)
        await self._client.start_workflow(
            IngestionWorkflow.run,
            IngestionInput(ingestion_id, collection, tuple(d.document_id for d in documents), chunking.value),
            id=ingestion_id,
            task_queue=self._task_queue,
        )
        return ingestion_id

    async def ingestion(self, ingestion_id: str) -> IngestionStatus:
        missing = not_found(f"no ingestion {ingestion_id!r}")
        if not ingestion_id.startswith(INGESTION_PREFIX):
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

    async def query(
        self, collection: str, text: str, top_k: int, mode: RetrievalMode | None = None
    ) -> list[ScoredChunk]:
        """`mode` None takes the default; keyword mode needs no embedding."""
        mode = mode or self.default_mode
        await self.store.get_collection(collection)
        vector = [] if mode == RetrievalMode.KEYWORD else (await self._embeddings.embed([text]))[0]
        return await search(self.store, collection, vector, text, mode, top_k)
