"""RetrievalService transport: protos to domain values and back; the rules live in RetrievalService."""

import grpc
from llmorch.v1 import retrieval_pb2, retrieval_pb2_grpc

from llmorch_common.errors import FieldViolation, invalid_argument, permission_denied
from llmorch_common.grpc_edge import unary_edge
from orchestrator_svc.identity.caller import caller
from orchestrator_svc.retrieval.service import (
    MAX_DOCUMENT_CHARS,
    MAX_DOCUMENTS,
    MAX_QUERY_CHARS,
    IngestionState,
    IngestionStatus,
    RetrievalService,
)
from orchestrator_svc.retrieval.staging import StagedDocument
from orchestrator_svc.retrieval.vectorstore.base import (
    CollectionInfo,
    resolve_top_k,
    top_k_violations,
    unscoped_collection,
)

SERVICE_NAME = retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name
INGESTION_STATES = {
    IngestionState.RUNNING: retrieval_pb2.INGESTION_STATE_RUNNING,
    IngestionState.COMPLETED: retrieval_pb2.INGESTION_STATE_COMPLETED,
    IngestionState.FAILED: retrieval_pb2.INGESTION_STATE_FAILED,
}


def collection_proto(info: CollectionInfo) -> retrieval_pb2.Collection:
    tenant, name = unscoped_collection(info.name)
    return retrieval_pb2.Collection(
        name=name, tenant=tenant, document_count=info.document_count, chunk_count=info.chunk_count
    )


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


def ingestion_proto(status: IngestionStatus) -> retrieval_pb2.GetIngestionResponse:
    return retrieval_pb2.GetIngestionResponse(
        state=INGESTION_STATES[status.state],
        documents_total=status.progress.documents_total,
        documents_done=status.progress.documents_done,
        chunks_done=status.progress.chunks_done,
        error=status.error,
    )


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    def __init__(self, service: RetrievalService) -> None:
        self._service = service

    @unary_edge
    async def CreateCollection(
        self, request: retrieval_pb2.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.CreateCollectionResponse:
        info = await self._service.create_collection(caller().tenant, request.name)
        return retrieval_pb2.CreateCollectionResponse(collection=collection_proto(info))

    @unary_edge
    async def ListCollections(
        self, request: retrieval_pb2.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.ListCollectionsResponse:
        principal = caller()
        if request.all_tenants and not principal.is_admin:
            raise permission_denied("listing across tenants needs an admin key")
        infos = await self._service.list_collections(principal.tenant, request.all_tenants)
        return retrieval_pb2.ListCollectionsResponse(collections=[collection_proto(i) for i in infos])

    @unary_edge
    async def DeleteCollection(
        self, request: retrieval_pb2.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.DeleteCollectionResponse:
        await self._service.delete_collection(caller().tenant, request.name)
        return retrieval_pb2.DeleteCollectionResponse()

    @unary_edge
    async def Ingest(
        self, request: retrieval_pb2.IngestRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.IngestResponse:
        violations = document_violations(list(request.documents))
        if violations:
            raise invalid_argument(violations)
        documents = [StagedDocument(d.id, d.text, dict(d.metadata)) for d in request.documents]
        ingestion_id = await self._service.ingest(caller().tenant, request.collection, documents)
        return retrieval_pb2.IngestResponse(ingestion_id=ingestion_id)

    @unary_edge
    async def GetIngestion(
        self, request: retrieval_pb2.GetIngestionRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.GetIngestionResponse:
        return ingestion_proto(await self._service.ingestion(caller().tenant, request.ingestion_id))

    @unary_edge
    async def Query(
        self, request: retrieval_pb2.QueryRequest, context: grpc.aio.ServicerContext
    ) -> retrieval_pb2.QueryResponse:
        violations = []
        if not request.text.strip() or len(request.text) > MAX_QUERY_CHARS:
            violations.append(FieldViolation("text", f"must be 1 to {MAX_QUERY_CHARS} characters"))
        top_k = resolve_top_k(request.top_k)
        violations += top_k_violations(top_k, "top_k")
        if violations:
            raise invalid_argument(violations)
        hits = await self._service.query(caller().tenant, request.collection, request.text, top_k)
        return retrieval_pb2.QueryResponse(
            chunks=[
                retrieval_pb2.ScoredChunk(
                    chunk_id=h.id, document_id=h.document_id, text=h.text, score=h.score, metadata=dict(h.metadata)
                )
                for h in hits
            ]
        )


def register(server: grpc.aio.Server, servicer: RetrievalServicer) -> list[str]:
    retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(servicer, server)
    return [SERVICE_NAME]
