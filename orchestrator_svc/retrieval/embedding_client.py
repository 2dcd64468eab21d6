"""EmbeddingService client for Query, the ingestion activity and the public Embed: batches, and keeps one channel."""

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from llmorch.internal.v1 import embedding_pb2, embedding_pb2_grpc

from llmorch_common.grpc_edge import make_channel
from orchestrator_svc.retrieval.embedding_cache import EmbeddingCache

# Small batches keep each call short, so heartbeats and progress stay fresh on a 2-core machine.
BATCH = 32


@dataclass(frozen=True)
class Embedded:
    """One unit-norm vector and one token count (after truncation) per text, in order, and the model that made them."""

    model_id: str
    vectors: list[list[float]]
    token_counts: list[int]


class EmbeddingClient:
    def __init__(self, address: str, cache: EmbeddingCache | None = None) -> None:
        self._channel = make_channel(address, embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"])
        self._stub = embedding_pb2_grpc.EmbeddingServiceStub(self._channel)
        self._cache = cache

    async def batches(self, texts: Sequence[str], timeout_s: float = 60.0) -> AsyncIterator[Embedded]:
        """One Embed call per BATCH texts, in order: callers that report progress do so between batches."""
        for start in range(0, len(texts), BATCH):
            reply = await self._stub.Embed(
                embedding_pb2.EmbedRequest(texts=list(texts[start : start + BATCH])), timeout=timeout_s
            )
            yield Embedded(
                reply.model_id,
                [list(embedding.values) for embedding in reply.embeddings],
                [embedding.token_count for embedding in reply.embeddings],
            )

    async def embed_with_counts(self, texts: Sequence[str], timeout_s: float = 60.0) -> Embedded:
        if self._cache is None:
            return await self._embed_all(texts, timeout_s)
        return await self._embed_cached(self._cache, texts, timeout_s)

    async def _embed_cached(self, cache: EmbeddingCache, texts: Sequence[str], timeout_s: float) -> Embedded:
        """Only the texts the cache lacks go to the service. The weights' digest is asked each time (a local call),
        so a service restarted with other weights never gets the old model's vectors."""
        info = await self._stub.GetEmbeddingModelInfo(embedding_pb2.GetEmbeddingModelInfoRequest(), timeout=timeout_s)
        digest = info.metadata.model_digest
        if not digest:  # a replica that reports no digest: nothing safe to key on
            return await self._embed_all(texts, timeout_s)
        found = await cache.lookup(digest, texts)
        missing = [i for i, entry in enumerate(found) if entry is None]
        if missing:
            fresh = await self._embed_all([texts[i] for i in missing], timeout_s)
            entries = list(zip(fresh.vectors, fresh.token_counts, strict=True))
            for index, entry in zip(missing, entries, strict=True):
                found[index] = entry
            await cache.store(digest, [(texts[i], v, n) for i, (v, n) in zip(missing, entries, strict=True)])
        vectors = [entry[0] for entry in found if entry is not None]
        counts = [entry[1] for entry in found if entry is not None]
        return Embedded(info.metadata.model_id, vectors, counts)

    async def _embed_all(self, texts: Sequence[str], timeout_s: float) -> Embedded:
        model_id = ""
        vectors: list[list[float]] = []
        token_counts: list[int] = []
        async for batch in self.batches(texts, timeout_s):
            model_id = batch.model_id
            vectors.extend(batch.vectors)
            token_counts.extend(batch.token_counts)
        return Embedded(model_id, vectors, token_counts)

    async def embed(self, texts: Sequence[str], timeout_s: float = 60.0) -> list[list[float]]:
        return (await self.embed_with_counts(texts, timeout_s)).vectors

    async def close(self) -> None:
        await self._channel.close()
        if self._cache:
            await self._cache.close()
