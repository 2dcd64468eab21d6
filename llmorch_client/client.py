"""Python client helpers for the public API: one channel, typed calls, ingestion with progress."""

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import grpc
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc, types_pb2

from llmorch_common.grpc_edge import make_channel

ProgressCallback = Callable[[retrieval_pb2.GetIngestionResponse], None]
INGEST_BATCH = 100  # documents per Ingest call, well under the API's limit of 1000


def question_request(
    question: str,
    model_id: str = "",
    collection: str = "",
    top_k: int = 0,
    max_tokens: int | None = None,
    seed: int | None = None,
) -> orchestrator_pb2.GenerateRequest:
    """A chat question; what is left unset (top_k 0, max_tokens None) takes the server's default."""
    return orchestrator_pb2.GenerateRequest(
        messages=[types_pb2.ChatMessage(role="user", content=question)],
        model_id=model_id,
        rag=types_pb2.RagOptions(collection=collection, top_k=top_k) if collection else None,
        sampling=types_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.2, seed=seed),
    )


def tls_credentials(tls: bool = False, ca_file: str | Path | None = None) -> grpc.ChannelCredentials | None:
    """TLS to the front door: the system's trusted roots, or only the CA in `ca_file` (a private or local CA);
    None (plaintext) when neither is asked for."""
    if not tls and ca_file is None:
        return None
    return grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes() if ca_file else None)


class OrchestratorClient:
    def __init__(self, target: str, api_key: str, *, credentials: grpc.ChannelCredentials | None = None) -> None:
        """`api_key` goes with every call as `authorization: Bearer <key>`; `credentials` (see `tls_credentials`)
        make it a TLS channel, as Envoy with a certificate needs."""
        self._channel = make_channel(
            target,
            orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"],
            retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"],
            token=api_key,
            credentials=credentials,
        )
        self.api = orchestrator_pb2_grpc.OrchestratorServiceStub(self._channel)
        self.retrieval = retrieval_pb2_grpc.RetrievalServiceStub(self._channel)

    async def __aenter__(self) -> "OrchestratorClient":
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self._channel.close()

    async def generate(
        self, request: orchestrator_pb2.GenerateRequest, timeout_s: float = 600
    ) -> orchestrator_pb2.GenerateResponse:
        reply: orchestrator_pb2.GenerateResponse = await self.api.Generate(request, timeout=timeout_s)
        return reply

    async def stream(
        self, request: orchestrator_pb2.GenerateRequest, timeout_s: float = 600
    ) -> AsyncIterator[orchestrator_pb2.GenerateStreamResponse]:
        call = self.api.GenerateStream(orchestrator_pb2.GenerateStreamRequest(request=request), timeout=timeout_s)
        async for event in call:
            yield event

    async def cancel(self, request_id: str, timeout_s: float = 60) -> orchestrator_pb2.CancelRequestResponse:
        """Cancel a running request; returns once it has ended, with the text generated until then."""
        reply: orchestrator_pb2.CancelRequestResponse = await self.api.CancelRequest(
            orchestrator_pb2.CancelRequestRequest(request_id=request_id), timeout=timeout_s
        )
        return reply

    async def list_models(
        self, model_type: types_pb2.ModelType.ValueType = types_pb2.MODEL_TYPE_UNSPECIFIED, timeout_s: float = 10
    ) -> list[orchestrator_pb2.Model]:
        reply = await self.api.ListModels(orchestrator_pb2.ListModelsRequest(model_type=model_type), timeout=timeout_s)
        return list(reply.models)

    async def embed(self, texts: Sequence[str], timeout_s: float = 120) -> orchestrator_pb2.EmbedResponse:
        reply: orchestrator_pb2.EmbedResponse = await self.api.Embed(
            orchestrator_pb2.EmbedRequest(texts=list(texts)), timeout=timeout_s
        )
        return reply

    async def ensure_collection(self, name: str) -> retrieval_pb2.Collection:
        listing = await self.retrieval.ListCollections(retrieval_pb2.ListCollectionsRequest())
        existing: list[retrieval_pb2.Collection] = [c for c in listing.collections if c.name == name]
        if existing:
            return existing[0]
        created = await self.retrieval.CreateCollection(retrieval_pb2.CreateCollectionRequest(name=name))
        result: retrieval_pb2.Collection = created.collection
        return result

    async def ingest(
        self, collection: str, documents: Mapping[str, str], on_progress: ProgressCallback | None = None
    ) -> int:
        """Ingest in batches and wait for each; returns the number of chunks stored."""
        chunks = 0
        items = list(documents.items())
        for start in range(0, len(items), INGEST_BATCH):
            batch = [retrieval_pb2.Document(id=k, text=v) for k, v in items[start : start + INGEST_BATCH]]
            started = await self.retrieval.Ingest(retrieval_pb2.IngestRequest(collection=collection, documents=batch))
            progress = await self.wait_ingestion(started.ingestion_id, on_progress)
            chunks += progress.chunks_done
        return chunks

    async def wait_ingestion(
        self, ingestion_id: str, on_progress: ProgressCallback | None = None, poll_s: float = 0.5
    ) -> retrieval_pb2.GetIngestionResponse:
        last: retrieval_pb2.GetIngestionResponse | None = None
        while True:
            progress = await self.retrieval.GetIngestion(retrieval_pb2.GetIngestionRequest(ingestion_id=ingestion_id))
            if on_progress and progress != last:
                on_progress(progress)
            last = progress
            if progress.state == retrieval_pb2.INGESTION_STATE_FAILED:
                raise RuntimeError(f"ingestion {ingestion_id} failed: {progress.error}")
            if progress.state == retrieval_pb2.INGESTION_STATE_COMPLETED:
                result: retrieval_pb2.GetIngestionResponse = progress
                return result
            await asyncio.sleep(poll_s)

    async def query(self, collection: str, text: str, top_k: int = 0) -> list[retrieval_pb2.ScoredChunk]:
        """top_k 0 takes the server's default."""
        reply = await self.retrieval.Query(retrieval_pb2.QueryRequest(collection=collection, text=text, top_k=top_k))
        return list(reply.chunks)
