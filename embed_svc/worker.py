"""The embedding Temporal worker: its `embed` activity calls this replica's EmbeddingService over gRPC."""

from datetime import timedelta

import grpc
from llmorch.internal.v1 import embedding_pb2, embedding_pb2_grpc
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from llmorch_common.contracts import EMBED_ACTIVITY, EmbedInput, EmbedOutput
from llmorch_common.errors import to_activity_failure
from llmorch_common.grpc_edge import activity_timeout_s, make_channel

SERVICE = embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"]


class EmbedActivities:
    def __init__(self, endpoint: str, max_batch: int) -> None:
        self._channel = make_channel(endpoint, SERVICE)
        self._stub = embedding_pb2_grpc.EmbeddingServiceStub(self._channel)
        self._max_batch = max_batch

    @activity.defn(name=EMBED_ACTIVITY)
    async def embed(self, request: EmbedInput) -> EmbedOutput:
        vectors: list[list[float]] = []
        token_counts: list[int] = []
        # Callers may send more texts than one RPC accepts; split here rather than make every caller know the limit.
        for start in range(0, len(request.texts), self._max_batch):
            texts = request.texts[start : start + self._max_batch]
            try:
                reply = await self._stub.Embed(embedding_pb2.EmbedRequest(texts=texts), timeout=activity_timeout_s())
            except grpc.aio.AioRpcError as error:
                raise to_activity_failure(error) from None
            vectors.extend(list(e.values) for e in reply.embeddings)
            token_counts.extend(e.token_count for e in reply.embeddings)
            activity.heartbeat(start + len(texts))
        return EmbedOutput(vectors=vectors, token_counts=token_counts)

    async def close(self) -> None:
        await self._channel.close()


def create_worker(
    client: Client, task_queue: str, activities: EmbedActivities, max_concurrent: int, drain_timeout_s: float
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        activities=[activities.embed],
        max_concurrent_activities=max_concurrent,
        # On SIGTERM, in-flight embeddings get this long to finish before they are cancelled and retried elsewhere.
        graceful_shutdown_timeout=timedelta(seconds=drain_timeout_s),
    )
