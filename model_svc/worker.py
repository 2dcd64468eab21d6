"""The model's Temporal worker: its `generate` activity calls this replica's ModelService over gRPC.

A retried attempt resumes: it asks the workflow what the selection already streamed (token ids and text, the
workflow's record, so it never lags the stream) or, without streaming, reads its last heartbeat, and passes those
token ids to ModelService, which continues after them."""

import asyncio
import time
from datetime import timedelta

import grpc
from llmorch.internal.v1 import model_pb2, model_pb2_grpc
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError
from temporalio.worker import Worker

from llmorch_common.contracts import (
    GENERATE_ACTIVITY,
    LENGTH,
    PROGRESS_QUERY,
    STREAM_SIGNAL,
    GenerateInput,
    GenerateOutput,
    GenerationProgress,
    StreamDelta,
)
from llmorch_common.errors import to_activity_failure, unavailable
from llmorch_common.finish_reason import finish_reason_from_proto
from llmorch_common.grpc_edge import activity_timeout_s, make_channel
from llmorch_common.heartbeats import heartbeat_forever
from llmorch_common.logs import bound
from llmorch_common.tracing import annotate
from llmorch_common.validation import sampling_to_proto, turns_to_proto

HEARTBEAT_INTERVAL_S = 1.0


class ModelActivities:
    def __init__(self, endpoint: str, client: Client, flush_interval_s: float) -> None:
        # Deltas are batched into one signal per interval: each signal costs the workflow a task, tokens nothing.
        self._flush_interval_s = flush_interval_s
        self._channel = make_channel(endpoint, model_pb2.DESCRIPTOR.services_by_name["ModelService"])
        self._stub = model_pb2_grpc.ModelServiceStub(self._channel)
        self._client = client

    @activity.defn(name=GENERATE_ACTIVITY)
    async def generate(self, request: GenerateInput) -> GenerateOutput:
        annotate(request_id=request.request_id, attempt=request.attempt, activity_attempt=activity.info().attempt)
        with bound(request_id=request.request_id):
            output = await self._run(request)
        annotate(
            model_id=output.model_id,
            prompt_tokens=output.prompt_tokens,
            completion_tokens=output.completion_tokens,
            resumed_tokens=output.resumed_tokens,
        )
        return output

    async def _run(self, request: GenerateInput) -> GenerateOutput:
        info = activity.info()
        queue_wait_ms = (info.started_time - info.current_attempt_scheduled_time).total_seconds() * 1000
        resume = await self._resume_point(request)
        started = time.perf_counter()
        if len(resume.token_ids) >= request.sampling.max_tokens:  # the answer was complete when the attempt died
            return GenerateOutput(
                text=resume.text,
                finish_reason=LENGTH,
                prompt_tokens=0,
                completion_tokens=len(resume.token_ids),
                time_to_first_token_ms=0.0,
                generation_ms=(time.perf_counter() - started) * 1000,
                model_id="",
                queue_wait_ms=max(queue_wait_ms, 0.0),
                resumed_tokens=len(resume.token_ids),
                activity_attempts=info.attempt,
            )
        proto = model_pb2.GenerateRequest(
            request_id=request.request_id,
            messages=turns_to_proto(request.messages),
            prompt=request.prompt,
            sampling=sampling_to_proto(request.sampling),
            resume_token_ids=resume.token_ids,
            assistant_prefix=request.assistant_prefix,
        )
        progress = Progress(resume)
        # Heartbeats carry cancellation to the activity, which cancels the gRPC call and frees the model; their
        # details are a resume point for a retry when nothing streams.
        heartbeats = asyncio.create_task(heartbeat_forever(progress.details, HEARTBEAT_INTERVAL_S))
        try:
            response = await self._generate(proto, request, progress)
        except grpc.aio.AioRpcError as error:
            raise to_activity_failure(error) from None
        finally:
            heartbeats.cancel()
        return GenerateOutput(
            text=resume.text + response.text,
            finish_reason=finish_reason_from_proto(response.finish_reason),
            prompt_tokens=response.usage.prompt_tokens,
            completion_tokens=response.resumed_tokens + response.usage.completion_tokens,
            time_to_first_token_ms=response.time_to_first_token_ms,
            generation_ms=response.generation_ms,
            model_id=response.model_id,
            queue_wait_ms=max(queue_wait_ms, 0.0),
            resumed_tokens=response.resumed_tokens,
            activity_attempts=info.attempt,
        )

    async def _resume_point(self, request: GenerateInput) -> GenerationProgress:
        """Where an earlier attempt of this selection stopped: the workflow's record when streaming (exactly what
        the client saw), otherwise the last heartbeat. A first attempt, or no record, starts from the beginning."""
        info = activity.info()
        fresh = GenerationProgress(request.attempt)
        if info.attempt == 1:
            return fresh
        if request.stream_to_workflow_id:
            workflow: WorkflowHandle[object, object] = self._client.get_workflow_handle(request.stream_to_workflow_id)
            try:
                recorded: GenerationProgress = await workflow.query(
                    PROGRESS_QUERY, request.attempt, result_type=GenerationProgress
                )
            except RPCError as error:
                # Starting over is safe: the workflow ignores deltas that do not continue its record, and the
                # final text reconciles the stream (a reset if it differs).
                activity.logger.warning("no progress record, generating from the start: %s", error)
                return fresh
            return recorded if recorded.attempt == request.attempt else fresh
        if info.heartbeat_details:
            details = info.heartbeat_details[0]
            if isinstance(details, dict):
                return GenerationProgress(
                    request.attempt, tuple(details.get("token_ids", ())), str(details.get("text", ""))
                )
        return fresh

    async def _generate(
        self, proto: model_pb2.GenerateRequest, request: GenerateInput, progress: "Progress"
    ) -> model_pb2.GenerateResponse:
        """Stream from the replica; when the request streams, signal the text and its tokens to the workflow."""
        workflow = (
            self._client.get_workflow_handle(request.stream_to_workflow_id) if request.stream_to_workflow_id else None
        )
        pending_text: list[str] = []
        pending_ids: list[int] = []
        last_flush = 0.0  # the first delta goes out at once: time to first token is what users feel

        async def flush() -> None:
            nonlocal last_flush
            if workflow and (pending_text or pending_ids):
                start = progress.flushed
                delta = StreamDelta(request.attempt, "".join(pending_text), tuple(pending_ids), start)
                await workflow.signal(STREAM_SIGNAL, delta)
                progress.flushed += len(pending_ids)
            pending_text.clear()
            pending_ids.clear()
            last_flush = time.monotonic()

        stream = self._stub.GenerateStream(
            model_pb2.GenerateStreamRequest(generation=proto), timeout=activity_timeout_s()
        )
        final: model_pb2.GenerateResponse | None = None
        try:
            # Read to the stream's end, past the final message: the call then completes (and its span ends).
            async for chunk in stream:
                if chunk.HasField("final"):
                    await flush()
                    final = chunk.final
                    continue
                progress.add(chunk.delta, list(chunk.token_ids))
                pending_text.append(chunk.delta)
                pending_ids.extend(chunk.token_ids)
                if time.monotonic() - last_flush >= self._flush_interval_s:
                    await flush()
        except BaseException:
            # Cancelled while signalling, the call would otherwise stay open and the replica keep generating.
            stream.cancel()
            raise
        if final is None:
            raise to_activity_failure(unavailable("model stream ended without a final message"))
        return final

    async def close(self) -> None:
        await self._channel.close()


class Progress:
    """This attempt's tokens and text so far (resumed ones included), and how many tokens reached the workflow."""

    def __init__(self, resume: GenerationProgress) -> None:
        self.token_ids = list(resume.token_ids)
        self.text = [resume.text]
        self.flushed = len(resume.token_ids)

    def add(self, text: str, token_ids: list[int]) -> None:
        self.text.append(text)
        self.token_ids.extend(token_ids)

    def details(self) -> dict[str, object]:
        return {"token_ids": list(self.token_ids), "text": "".join(self.text)}


def create_worker(client: Client, task_queue: str, activities: ModelActivities, max_concurrency: int) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        activities=[activities.generate],
        # One activity per context: the queue holds the rest durably (backpressure), never the model process.
        max_concurrent_activities=max_concurrency,
        graceful_shutdown_timeout=timedelta(seconds=30),
    )
