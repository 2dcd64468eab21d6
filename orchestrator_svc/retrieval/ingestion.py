"""Durable ingestion: one workflow per Ingest call; each document is chunked, embedded in batches and upserted.

A document's activity replaces all of its chunks at once, so a retry or a restarted worker never duplicates it,
and finished documents are never redone: the workflow remembers them in its history.
"""

from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    import asyncio

    import grpc

    from llmorch_common.errors import (
        INPUT_ERROR_CODES,
        PlatformError,
        from_activity_failure,
        not_found,
        to_activity_failure,
        to_final_failure,
    )
    from llmorch_common.heartbeats import heartbeat_forever
    from orchestrator_svc.retrieval.chunking import HEADING_PATH_KEY, Chunking, chunk_document
    from orchestrator_svc.retrieval.embedding_client import EmbeddingClient
    from orchestrator_svc.retrieval.staging import Staging
    from orchestrator_svc.retrieval.vectorstore.base import ChunkRecord, VectorStore

INGEST_DOCUMENT_ACTIVITY = "ingest_document"
RELEASE_STAGING_ACTIVITY = "release_staging"
PROGRESS_QUERY = "progress"
# One embedding batch can outlast the heartbeat timeout on a loaded machine; a timer keeps heartbeating while the
# worker lives, so only a dead worker times out.
HEARTBEAT_INTERVAL_S = 5.0


@dataclass(frozen=True)
class IngestionInput:
    ingestion_id: str
    collection: str
    document_ids: tuple[str, ...]
    # A Chunking value; runs started before section chunking existed chunk flat, as they began.
    chunking: str = Chunking.FLAT.value


@dataclass(frozen=True)
class IngestDocumentInput:
    ingestion_id: str
    collection: str
    document_id: str
    chunking: str = Chunking.FLAT.value


@dataclass(frozen=True)
class IngestionProgress:
    documents_total: int
    documents_done: int
    chunks_done: int
    done: bool = False


@workflow.defn
class IngestionWorkflow:
    def __init__(self) -> None:
        self._progress = IngestionProgress(0, 0, 0)

    @workflow.run
    async def run(self, request: IngestionInput) -> IngestionProgress:
        total = len(request.document_ids)
        chunks = 0
        self._progress = IngestionProgress(total, 0, 0)
        for done, document_id in enumerate(request.document_ids, start=1):
            try:
                stored: int = await workflow.execute_activity(
                    INGEST_DOCUMENT_ACTIVITY,
                    IngestDocumentInput(request.ingestion_id, request.collection, document_id, request.chunking),
                    result_type=int,
                    start_to_close_timeout=timedelta(minutes=10),
                    heartbeat_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_attempts=5, non_retryable_error_types=sorted(INPUT_ERROR_CODES)),
                )
            except ActivityError as error:
                raise from_activity_failure(error, f"document {document_id!r}: ") from None
            chunks += stored
            self._progress = IngestionProgress(total, done, chunks)
        await workflow.execute_activity(
            RELEASE_STAGING_ACTIVITY, request.ingestion_id, start_to_close_timeout=timedelta(seconds=30)
        )
        self._progress = IngestionProgress(total, total, chunks, done=True)
        return self._progress

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> IngestionProgress:
        return self._progress


def chunk_metadata(metadata: dict[str, str], heading_path: str) -> dict[str, str]:
    return {**metadata, HEADING_PATH_KEY: heading_path} if heading_path else metadata


class IngestionActivities:
    def __init__(self, store: VectorStore, staging: Staging, embeddings: EmbeddingClient) -> None:
        self._store = store
        self._staging = staging
        self._embeddings = embeddings

    @activity.defn(name=INGEST_DOCUMENT_ACTIVITY)
    async def ingest_document(self, request: IngestDocumentInput) -> int:
        document = await self._staging.get(request.ingestion_id, request.document_id)
        if document is None:
            raise to_activity_failure(not_found(f"document {request.document_id!r} is not staged"))
        chunks = chunk_document(request.document_id, document.text, Chunking(request.chunking))
        vectors: list[list[float]] = []
        heartbeats = asyncio.create_task(heartbeat_forever(lambda: len(vectors), HEARTBEAT_INTERVAL_S))
        try:
            async for batch in self._embeddings.batches([c.indexed_text for c in chunks]):
                vectors.extend(batch.vectors)
        except grpc.aio.AioRpcError as error:
            raise to_activity_failure(error) from None
        finally:
            heartbeats.cancel()
        records = [
            ChunkRecord(c.id, c.indexed_text, vector, chunk_metadata(document.metadata, c.heading_path))
            for c, vector in zip(chunks, vectors, strict=True)
        ]
        try:
            return await self._store.upsert_document(request.collection, request.document_id, records)
        except PlatformError as error:
            raise to_final_failure(error) from None

    @activity.defn(name=RELEASE_STAGING_ACTIVITY)
    async def release_staging(self, ingestion_id: str) -> None:
        await self._staging.release(ingestion_id)
