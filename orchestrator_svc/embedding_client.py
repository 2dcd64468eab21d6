"""EmbeddingService client for the API's Query and the ingestion activity: batches, and keeps one channel."""

from collections.abc import Sequence

from llmorch.v1 import embedding_pb2, embedding_pb2_grpc

from llmorch_common.grpc_edge import make_channel

# Small batches keep each call short, so heartbeats and progress stay fresh on a 2-core machine.
BATCH = 32


class EmbeddingClient:
    def __init__(self, address: str) -> None:
        self._channel = make_channel(address, embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"])
        self._stub = embedding_pb2_grpc.EmbeddingServiceStub(self._channel)

    async def embed(self, texts: Sequence[str], timeout_s: float = 60.0) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), BATCH):
            reply = await self._stub.Embed(
                embedding_pb2.EmbedRequest(texts=list(texts[start : start + BATCH])), timeout=timeout_s
            )
            vectors.extend(list(embedding.values) for embedding in reply.embeddings)
        return vectors

    async def close(self) -> None:
        await self._channel.close()
