"""The model's Temporal worker: its `generate` activity calls this replica's ModelService over gRPC."""

import asyncio
import time
from contextlib import suppress
from datetime import timedelta

import grpc
from llmorch.internal.v1 import model_pb2, model_pb2_grpc
from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from llmorch_common.contracts import GENERATE_ACTIVITY, STREAM_SIGNAL, GenerateInput, GenerateOutput, StreamDelta
from llmorch_common.errors import to_activity_failure, unavailable
from llmorch_common.finish_reason import finish_reason_from_proto
from llmorch_common.grpc_edge import activity_timeout_s, make_channel
from llmorch_common.validation import sampling_to_proto, turns_to_proto

# Deltas are batched into one signal per interval: each signal costs the workflow a task, tokens cost nothing.
STREAM_FLUSH_INTERVAL_S = 0.1


class ModelActivities:
    def __init__(self, endpoint: str, client: Client) -> None:
        self._channel = make_channel(endpoint, model_pb2.DESCRIPTOR.services_by_name["ModelService"])
        self._stub = model_pb2_grpc.ModelServiceStub(self._channel)
        self._client = client

    @activity.defn(name=GENERATE_ACTIVITY)
    async def generate(self, request: GenerateInput) -> GenerateOutput:
        proto = model_pb2.GenerateRequest(
            request_id=request.request_id,
            messages=turns_to_proto(request.messages),
            prompt=request.prompt,
            sampling=sampling_to_proto(request.sampling),
        )
        info = activity.info()
        queue_wait_ms = (info.started_time - info.current_attempt_scheduled_time).total_seconds() * 1000
        heartbeats = asyncio.create_task(_heartbeat_forever())
        try:
            if request.stream_to_workflow_id:
                response = await self._generate_streaming(proto, request)
            else:
                response = await self._stub.Generate(proto, timeout=activity_timeout_s())
        except grpc.aio.AioRpcError as error:
            raise to_activity_failure(error) from None
        finally:
            heartbeats.cancel()
        return GenerateOutput(
            text=response.text,
            finish_reason=finish_reason_from_proto(response.finish_reason),
            prompt_tokens=response.usage.prompt_tokens,
            completion_tokens=response.usage.completion_tokens,
            time_to_first_token_ms=response.time_to_first_token_ms,
            generation_ms=response.generation_ms,
            model_id=response.model_id,
            queue_wait_ms=max(queue_wait_ms, 0.0),
        )

    async def _generate_streaming(
        self, proto: model_pb2.GenerateRequest, request: GenerateInput
    ) -> model_pb2.GenerateResponse:
        workflow = self._client.get_workflow_handle(request.stream_to_workflow_id)
        pending: list[str] = []
        last_flush = 0.0  # the first delta goes out at once: time to first token is what users feel

        async def flush() -> None:
            nonlocal last_flush
            if pending:
                await workflow.signal(STREAM_SIGNAL, StreamDelta(request.attempt, "".join(pending)))
                pending.clear()
            last_flush = time.monotonic()

        stream = self._stub.GenerateStream(
            model_pb2.GenerateStreamRequest(generation=proto), timeout=activity_timeout_s()
        )
        async for chunk in stream:
            if chunk.HasField("final"):
                await flush()
                final: model_pb2.GenerateResponse = chunk.final
                return final
            pending.append(chunk.delta)
            if time.monotonic() - last_flush >= STREAM_FLUSH_INTERVAL_S:
                await flush()
        raise to_activity_failure(unavailable("model stream ended without a final message"))

    async def close(self) -> None:
        await self._channel.close()


async def _heartbeat_forever() -> None:
    """Heartbeats carry cancellation to the activity, which cancels the gRPC call and frees the model."""
    with suppress(asyncio.CancelledError):
        while True:
            activity.heartbeat()
            await asyncio.sleep(1.0)


def create_worker(client: Client, task_queue: str, activities: ModelActivities, max_concurrency: int) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        activities=[activities.generate],
        # One activity per context: the queue holds the rest durably (backpressure), never the model process.
        max_concurrent_activities=max_concurrency,
        graceful_shutdown_timeout=timedelta(seconds=30),
    )
