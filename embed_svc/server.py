"""EmbeddingService transport: protobuf in and out, validation to BadRequest, the engine does the work."""

import grpc
from llmorch.internal.v1 import embedding_pb2, embedding_pb2_grpc, metadata_pb2

from embed_svc.engine import EmbeddingEngine
from llmorch_common.errors import invalid_argument, unavailable
from llmorch_common.grpc_edge import unary_edge
from llmorch_common.validation import embed_violations

SERVICE_NAME = embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name


class EmbeddingServicer(embedding_pb2_grpc.EmbeddingServiceServicer):
    def __init__(self, metadata: metadata_pb2.ModelMetadata, max_batch: int, max_chars: int) -> None:
        self.metadata = metadata
        # Set once the weights are loaded; until then health says NOT_SERVING and calls get UNAVAILABLE.
        self.engine: EmbeddingEngine | None = None
        self._max_batch = max_batch
        self._max_chars = max_chars

    @unary_edge
    async def Embed(
        self, request: embedding_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> embedding_pb2.EmbedResponse:
        texts = list(request.texts)
        violations = embed_violations(texts, self._max_batch, self._max_chars)
        if violations:
            raise invalid_argument(violations)
        engine = self._ready_engine()
        batch = await engine.embed(texts)
        embeddings = [
            embedding_pb2.Embedding(values=row.tolist(), token_count=count)
            for row, count in zip(batch.vectors, batch.token_counts, strict=True)
        ]
        return embedding_pb2.EmbedResponse(embeddings=embeddings, model_id=self.metadata.model_id)

    @unary_edge
    async def GetEmbeddingModelInfo(
        self, request: embedding_pb2.GetEmbeddingModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> embedding_pb2.GetEmbeddingModelInfoResponse:
        engine = self._ready_engine()
        return embedding_pb2.GetEmbeddingModelInfoResponse(metadata=self.metadata, dimension=engine.dimension)

    def _ready_engine(self) -> EmbeddingEngine:
        if self.engine is None:
            raise unavailable("embedding model is still loading")
        return self.engine


def register(server: grpc.aio.Server, servicer: EmbeddingServicer) -> list[str]:
    embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(servicer, server)
    return [SERVICE_NAME]
