"""EmbeddingService transport: protobuf in and out, validation to BadRequest, the engine does the work."""

import asyncio
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health
from llmorch.internal.v1 import embedding_pb2, embedding_pb2_grpc, metadata_pb2
from llmorch.v1 import types_pb2

from embed_svc.config import EmbedSettings
from embed_svc.engine import EmbeddingEngine
from embed_svc.gguf_convert import ensure_minilm_gguf
from llmorch_common.constants import embedding_task_queue
from llmorch_common.errors import invalid_argument, unavailable
from llmorch_common.grpc_edge import create_server, set_serving, unary_edge
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


@dataclass
class EmbeddingServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    servicer: EmbeddingServicer


def register(server: grpc.aio.Server, servicer: EmbeddingServicer) -> list[str]:
    embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(servicer, server)
    return [SERVICE_NAME]


def build_metadata(settings: EmbedSettings, port: int) -> metadata_pb2.ModelMetadata:
    return metadata_pb2.ModelMetadata(
        model_id=settings.model_id,
        model_name=settings.model_name,
        model_type=types_pb2.MODEL_TYPE_EMBEDDING,
        priority=settings.priority,
        default_flag=settings.default_flag,
        # One llama.cpp context serialises every call, so one replica never promises more than one at a time.
        max_concurrency=1,
        context_limit=settings.max_tokens,
        hardware_type=types_pb2.HARDWARE_TYPE_CPU,
        endpoint=f"{settings.advertise_host}:{port}",
        task_queue=embedding_task_queue(settings.model_id),
    )


async def start_server(settings: EmbedSettings) -> EmbeddingServer:
    """Bind and start at once, NOT_SERVING: probes can reach the process while the weights load."""
    servicer = EmbeddingServicer(metadata_pb2.ModelMetadata(), settings.max_batch, settings.max_text_chars)
    server, port, health = await create_server(lambda s: register(s, servicer), settings.port, settings.host)
    servicer.metadata = build_metadata(settings, port)
    await server.start()
    return EmbeddingServer(server, port, health, servicer)


def load_engine(settings: EmbedSettings) -> EmbeddingEngine:
    """Blocking: converts the weights on first start, then loads them."""
    path = ensure_minilm_gguf(Path(settings.model_path))
    return EmbeddingEngine(
        path, settings.max_tokens, settings.batch_tokens, settings.batch_sequences, settings.n_threads
    )


async def load_and_serve(running: EmbeddingServer, settings: EmbedSettings) -> None:
    running.servicer.engine = await asyncio.to_thread(load_engine, settings)
    await set_serving(running.health, [SERVICE_NAME], True)


async def stop_server(running: EmbeddingServer, grace_s: float) -> None:
    """NOT_SERVING first so routers stop sending, then let in-flight calls finish within the grace."""
    await running.health.enter_graceful_shutdown()
    await running.server.stop(grace_s)
    if running.servicer.engine is not None:
        running.servicer.engine.close()
