"""RetrievalService: collections, durable ingestion through IngestionWorkflow, and search."""

import uuid

import grpc
from llmorch.v1 import retrieval_pb2, retrieval_pb2_grpc
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode

from llmorch_common.errors import FieldViolation, invalid_argument, not_found, out_of_range
from llmorch_common.grpc_edge import unary_edge
from orchestrator_svc.embedding_client import EmbeddingClient
from orchestrator_svc.ingestion import PROGRESS_QUERY, IngestionInput, IngestionProgress, IngestionWorkflow
from orchestrator_svc.staging import StagedDocument, Staging
from orchestrator_svc.vectorstore.base import CollectionInfo, VectorStore

SERVICE_NAME = retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name
MAX_DOCUMENT_CHARS = 2_000_000
MAX_DOCUMENTS = 1000
MAX_QUERY_CHARS = 20_000
MAX_TOP_K = 50
DEFAULT_TOP_K = 5
INGESTION_PREFIX = "ingest-"


def collection_proto(info: CollectionInfo) -> retrieval_pb2.Collection:
    return retrieval_pb2.Collection(name=info.name, document_count=info.document_count, chunk_count=info.chunk_count)


def document_violations(documents: list[retrieval_pb2.Document]) -> list[FieldViolation]:
    violations = []
    if not documents:
        violations.append(FieldViolation("documents", "at least one document is required"))
    if len(documents) > MAX_DOCUMENTS:
        violations.append(FieldViolation("documents", f"at most {MAX_DOCUMENTS} documents per call"))
    seen: set[str] = set()
    for index, document in enumerate(documents):
        if not document.id.strip():
            violations.append(FieldViolation(f"documents[{index}].id", "must not be empty"))
        elif document.id in seen:
            violations.append(FieldViolation(f"documents[{index}].id", f"duplicate id {document.id!r}"))
        seen.add(document.id)
        if not document.text.strip():
            violations.append(FieldViolation(f"documents[{index}].text", "must not be empty"))
        if len(document.text) > MAX_DOCUMENT_CHARS:
            violations.append(FieldViolation(f"documents[{index}].text", f"at most {MAX_DOCUMENT_CHARS} characters"))
    return violations


def check_top_k(top_k: int) -> int:
    """0 means the default; anything outside [1, 50] is OUT_OF_RANGE, as the proto documents."""
    if top_k == 0:
        return DEFAULT_TOP_K
    if not 1 <= top_k <= MAX_TOP_K:
        raise out_of_range(f"top_k must be in [1, {MAX_TOP_K}], got {top_k}")
    return top_k


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    def __init__(
        self, client: Client, task_queue: str, store: VectorStore, staging: Staging, embeddings: EmbeddingClient
    ) -> None:
        self._client = client
        self._task_queue = task_queue
        self.store = store
        self._staging = staging
        self._embeddings = embeddings

    @unary_edge
    async def CreateCollection(
        self, request: retrieval_pb2.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.CreateCollectionResponse:
        info = await self.store.create_collection(request.name)
        return retrieval_pb2.CreateCollectionResponse(collection=collection_proto(info))

    @unary_edge
    async def ListCollections(
        self, request: retrieval_pb2.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.ListCollectionsResponse:
        infos = await self.store.list_collections()
        return retrieval_pb2.ListCollectionsResponse(collections=[collection_proto(i) for i in infos])

    @unary_edge
    async def DeleteCollection(
        self, request: retrieval_pb2.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.DeleteCollectionResponse:
        await self.store.delete_collection(request.name)
        return retrieval_pb2.DeleteCollectionResponse()

    @unary_edge
    async def Ingest(
        self, request: retrieval_pb2.IngestRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.IngestResponse:
        violations = document_violations(list(request.documents))
        if violations:
            raise invalid_argument(violations)
        await self.store.get_collection(request.collection)  # NOT_FOUND before anything is staged
        ingestion_id = INGESTION_PREFIX + uuid.uuid4().hex
        await self._staging.put(
            ingestion_id, [StagedDocument(d.id, d.text, dict(d.metadata)) for d in request.documents]
        )
        await self._client.start_workflow(
            IngestionWorkflow.run,
            IngestionInput(ingestion_id, request.collection, tuple(d.id for d in request.documents)),
            id=ingestion_id,
            task_queue=self._task_queue,
        )
        return retrieval_pb2.IngestResponse(ingestion_id=ingestion_id)

    @unary_edge
    async def GetIngestion(
        self, request: retrieval_pb2.GetIngestionRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.GetIngestionResponse:
        if not request.ingestion_id.startswith(INGESTION_PREFIX):
            raise not_found(f"no ingestion {request.ingestion_id!r}")
        handle = self._client.get_workflow_handle_for(IngestionWorkflow.run, request.ingestion_id)
        try:
            description = await handle.describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise not_found(f"no ingestion {request.ingestion_id!r}") from None
            raise
        if description.status == WorkflowExecutionStatus.RUNNING:
            progress = await handle.query(PROGRESS_QUERY, result_type=IngestionProgress)
            return _progress_proto(retrieval_pb2.INGESTION_STATE_RUNNING, progress)
        try:
            progress = await handle.result()
        except WorkflowFailureError as error:
            return retrieval_pb2.GetIngestionResponse(
                state=retrieval_pb2.INGESTION_STATE_FAILED, error=str(error.cause)
            )
        return _progress_proto(retrieval_pb2.INGESTION_STATE_COMPLETED, progress)

    @unary_edge
    async def Query(
        self, request: retrieval_pb2.QueryRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.QueryResponse:
        top_k = check_top_k(request.top_k)
        if not request.text.strip() or len(request.text) > MAX_QUERY_CHARS:
            raise invalid_argument([FieldViolation("text", f"must be 1 to {MAX_QUERY_CHARS} characters")])
        await self.store.get_collection(request.collection)
        [vector] = await self._embeddings.embed([request.text])
        hits = await self.store.query(request.collection, vector, top_k)
        return retrieval_pb2.QueryResponse(
            chunks=[
                retrieval_pb2.ScoredChunk(
                    chunk_id=h.id, document_id=h.document_id, text=h.text, score=h.score, metadata=dict(h.metadata)
                )
                for h in hits
            ]
        )


def _progress_proto(state: int, progress: IngestionProgress) -> retrieval_pb2.GetIngestionResponse:
    return retrieval_pb2.GetIngestionResponse(
        state=state,  # type: ignore[arg-type]
        documents_total=progress.documents_total,
        documents_done=progress.documents_done,
        chunks_done=progress.chunks_done,
    )


def register(server: grpc.aio.Server, servicer: RetrievalServicer) -> list[str]:
    retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(servicer, server)
    return [SERVICE_NAME]
