"""OrchestratorService: each Generate runs as one InferenceWorkflow; ListModels and Embed read the internal services."""

import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from datetime import timedelta

import grpc
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2
from prometheus_client import Histogram
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from llmorch_common.contracts import (
    DispatchPolicy,
    InferenceInput,
    InferenceResult,
    RagRequest,
    StreamCursor,
    StreamSnapshot,
)
from llmorch_common.errors import (
    FieldViolation,
    PlatformError,
    already_exists,
    invalid_argument,
    not_found,
    resource_exhausted,
)
from llmorch_common.finish_reason import finish_reason_to_proto
from llmorch_common.grpc_edge import stream_edge, unary_edge
from llmorch_common.validation import (
    REQUEST_ID_PATTERN,
    embed_violations,
    generation_violations,
    resolve_sampling,
    to_turns,
)
from orchestrator_svc.config import OrchestratorSettings
from orchestrator_svc.embedding_client import EmbeddingClient
from orchestrator_svc.public_model import public_model
from orchestrator_svc.registry_server import RegistryServicer
from orchestrator_svc.retrieval_server import DEFAULT_TOP_K, MAX_TOP_K
from orchestrator_svc.vectorstore.base import VectorStore
from orchestrator_svc.workflows import WATCH_STREAM_UPDATE, InferenceWorkflow

WORKFLOW_DURATION = Histogram(
    "llmorch_workflow_duration_seconds",
    "Request wall time as the API saw it, by workflow and outcome (OK or the status code)",
    ["workflow", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
SERVICE_NAME = orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name
WORKFLOW_ID_PREFIX = "inference-"
DIGEST_MEMO = "request_digest"


def workflow_id(request_id: str) -> str:
    return WORKFLOW_ID_PREFIX + request_id


def request_digest(request: orchestrator_pb2.GenerateRequest) -> str:
    """What makes two requests "the same" for idempotency: everything but the id, deterministically serialised."""
    content = orchestrator_pb2.GenerateRequest()
    content.CopyFrom(request)
    content.request_id = ""
    return hashlib.sha256(content.SerializeToString(deterministic=True)).hexdigest()


def result_to_proto(result: InferenceResult) -> orchestrator_pb2.GenerateResponse:
    return orchestrator_pb2.GenerateResponse(
        request_id=result.request_id,
        text=result.text,
        finish_reason=finish_reason_to_proto(result.finish_reason),
        provenance=types_pb2.Provenance(
            model_id=result.model_id,
            selection_reason=result.selection_reason,
            fallbacks=[types_pb2.Fallback(model_id=f.model_id, reason=f.reason) for f in result.fallbacks],
            usage=types_pb2.Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens),
            timings=types_pb2.Timings(
                queue_wait_ms=result.queue_wait_ms,
                time_to_first_token_ms=result.time_to_first_token_ms,
                generation_ms=result.generation_ms,
                retrieval_ms=result.retrieval_ms,
                total_ms=result.total_ms,
            ),
            citations=[
                types_pb2.Citation(chunk_id=c.chunk_id, source=c.source, score=c.score, text=c.text)
                for c in result.citations
            ],
            workflow_id=result.workflow_id,
            run_id=result.run_id,
        ),
    )


def workflow_error(error: WorkflowFailureError) -> PlatformError:
    """The workflow fails with ApplicationError(type=<google.rpc.Code name>); anything else is INTERNAL."""
    cause: BaseException | None = error.cause
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__
    if isinstance(cause, ApplicationError) and cause.type:
        return PlatformError(cause.message, cause.type)
    return PlatformError(f"request failed: {error.cause}", "INTERNAL")


class OrchestratorServicer(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(
        self,
        client: Client,
        settings: OrchestratorSettings,
        registry: RegistryServicer,
        store: VectorStore,
        embeddings: EmbeddingClient,
    ) -> None:
        self._store = store
        self._embeddings = embeddings
        self._client = client
        self._in_flight = 0
        self._settings = settings
        self._registry = registry

    async def _rag(self, request: orchestrator_pb2.GenerateRequest) -> RagRequest | None:
        if not request.rag.collection:
            return None
        await self._store.get_collection(request.rag.collection)  # NOT_FOUND before the workflow starts
        top_k = request.rag.top_k or DEFAULT_TOP_K
        return RagRequest(request.rag.collection, top_k, self._settings.embedding_task_queue)

    async def _inference_input(self, request: orchestrator_pb2.GenerateRequest, stream: bool) -> InferenceInput:
        violations = generation_violations(list(request.messages), request.prompt, request.sampling)
        if request.request_id and not REQUEST_ID_PATTERN.match(request.request_id):
            violations.append(FieldViolation("request_id", "1 to 128 characters of [A-Za-z0-9._:-]"))
        if request.HasField("rag") and request.rag.collection and not 0 <= request.rag.top_k <= MAX_TOP_K:
            violations.append(FieldViolation("rag.top_k", f"must be in [1, {MAX_TOP_K}]; 0 means {DEFAULT_TOP_K}"))
        if violations:
            raise invalid_argument(violations)
        known = self._registry.llm_ids()
        if request.model_id and request.model_id not in known:
            raise not_found(f"no LLM {request.model_id!r} is registered; known: {', '.join(sorted(known))}")
        s = self._settings
        return InferenceInput(
            request_id=request.request_id or uuid.uuid4().hex,
            messages=to_turns(list(request.messages)),
            prompt=request.prompt,
            sampling=resolve_sampling(request.sampling),
            model_id=request.model_id,
            rag=await self._rag(request),
            stream=stream,
            request_digest=request_digest(request),
            policy=DispatchPolicy(
                generate_timeout_s=s.generate_timeout_s,
                heartbeat_timeout_s=s.heartbeat_timeout_s,
                saturation_timeout_s=s.saturation_timeout_s,
                generate_attempts=s.generate_attempts,
                max_selections=s.max_selections,
            ),
        )

    async def _result(self, handle: WorkflowHandle[InferenceWorkflow, InferenceResult]) -> InferenceResult:
        """Wait for the run's result, observing its duration and outcome either way."""
        started = time.perf_counter()
        outcome = "OK"
        try:
            return await handle.result()
        except WorkflowFailureError as error:
            failure = workflow_error(error)
            outcome = failure.code
            raise failure from None
        finally:
            WORKFLOW_DURATION.labels("InferenceWorkflow", outcome).observe(time.perf_counter() - started)

    async def _start(self, request: InferenceInput) -> WorkflowHandle[InferenceWorkflow, InferenceResult]:
        """Start the request's workflow, or attach to the run that already has its id, if it is the same request."""
        wf_id = workflow_id(request.request_id)
        try:
            return await self._client.start_workflow(
                InferenceWorkflow.run,
                request,
                id=wf_id,
                task_queue=self._settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                execution_timeout=timedelta(seconds=self._settings.request_timeout_s),
                memo={DIGEST_MEMO: request.request_digest},
                # With a worker in this process, the first workflow task comes back in the start response.
                request_eager_start=True,
            )
        except WorkflowAlreadyStartedError:
            handle = self._client.get_workflow_handle_for(InferenceWorkflow.run, wf_id)
            description = await handle.describe()
            if await description.memo_value(DIGEST_MEMO, default="") != request.request_digest:
                raise already_exists(f"request_id {request.request_id!r} was used for a different request") from None
            return handle

    @contextlib.contextmanager
    def _admitted(self) -> Iterator[None]:
        """Bound the requests one API replica holds open; beyond it, tell clients when to come back."""
        if self._in_flight >= self._settings.max_in_flight:
            raise resource_exhausted(f"{self._in_flight} requests in flight on this API replica", retry_after_s=1.0)
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    @unary_edge
    async def Generate(
        self, request: orchestrator_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.GenerateResponse:
        with self._admitted():
            handle = await self._start(await self._inference_input(request, stream=False))
            return result_to_proto(await self._result(handle))

    @stream_edge
    async def GenerateStream(
        self, request: orchestrator_pb2.GenerateStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[orchestrator_pb2.GenerateStreamResponse]:
        with self._admitted():
            async with contextlib.aclosing(self._stream(request.request)) as events:
                async for event in events:
                    yield event

    async def _stream(
        self, request: orchestrator_pb2.GenerateRequest
    ) -> AsyncGenerator[orchestrator_pb2.GenerateStreamResponse, None]:
        inference = await self._inference_input(request, stream=True)
        handle = await self._start(inference)
        request_id = inference.request_id
        cursor = StreamCursor(attempt=0, offset=0)
        while True:
            try:
                snapshot: StreamSnapshot = await handle.execute_update(
                    WATCH_STREAM_UPDATE, cursor, result_type=StreamSnapshot
                )
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise
                break  # the run already closed: its result below is all there is to send
            if snapshot.attempt != cursor.attempt:
                yield orchestrator_pb2.GenerateStreamResponse(
                    request_id=request_id,
                    selected=orchestrator_pb2.ModelSelected(
                        model_id=snapshot.model_id, reason=snapshot.reason, attempt=snapshot.attempt
                    ),
                )
            if snapshot.text:
                yield orchestrator_pb2.GenerateStreamResponse(request_id=request_id, delta=snapshot.text)
            cursor = StreamCursor(snapshot.attempt, snapshot.offset + len(snapshot.text))
            if snapshot.done:
                break
        result = await self._result(handle)
        yield orchestrator_pb2.GenerateStreamResponse(request_id=request_id, completed=result_to_proto(result))

    @unary_edge
    async def GetRequest(
        self, request: orchestrator_pb2.GetRequestRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.GetRequestResponse:
        if not REQUEST_ID_PATTERN.match(request.request_id):
            raise invalid_argument([FieldViolation("request_id", "1 to 128 characters of [A-Za-z0-9._:-]")])
        handle = self._client.get_workflow_handle_for(InferenceWorkflow.run, workflow_id(request.request_id))
        try:
            description = await handle.describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise not_found(f"no request with id {request.request_id!r}") from None
            raise
        reply = orchestrator_pb2.GetRequestResponse(request_id=request.request_id)
        status = description.status
        if status == WorkflowExecutionStatus.RUNNING:
            reply.status = orchestrator_pb2.REQUEST_STATUS_RUNNING
        elif status == WorkflowExecutionStatus.COMPLETED:
            reply.status = orchestrator_pb2.REQUEST_STATUS_COMPLETED
            reply.result.CopyFrom(result_to_proto(await handle.result()))
        elif status in (WorkflowExecutionStatus.FAILED, WorkflowExecutionStatus.TIMED_OUT):
            reply.status = orchestrator_pb2.REQUEST_STATUS_FAILED
            try:
                await handle.result()
            except WorkflowFailureError as error:
                failure = workflow_error(error)
                reply.error_code, reply.error_message = failure.code, failure.message
        else:
            reply.status = orchestrator_pb2.REQUEST_STATUS_CANCELLED
        return reply

    @unary_edge
    async def ListModels(
        self, request: orchestrator_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.ListModelsResponse:
        models = await self._registry.list_models(request.model_type)
        return orchestrator_pb2.ListModelsResponse(models=[public_model(m) for m in models])

    @unary_edge
    async def Embed(
        self, request: orchestrator_pb2.EmbedRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.EmbedResponse:
        texts = list(request.texts)
        violations = embed_violations(texts)
        if violations:
            raise invalid_argument(violations)
        embedded = await self._embeddings.embed_with_counts(texts)
        return orchestrator_pb2.EmbedResponse(
            model_id=embedded.model_id,
            embeddings=[
                orchestrator_pb2.Embedding(values=vector, token_count=count)
                for vector, count in zip(embedded.vectors, embedded.token_counts, strict=True)
            ],
        )


def register(server: grpc.aio.Server, servicer: OrchestratorServicer) -> list[str]:
    orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(servicer, server)
    return [SERVICE_NAME]
