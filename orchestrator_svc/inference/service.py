"""Inference's rules, without gRPC: admission, the model and collection checks, idempotent start of one
InferenceWorkflow per request, the stream relay, and what a finished or failed run means for the caller."""

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from prometheus_client import Counter, Histogram
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import Priority, WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from llmorch_common.contracts import CANCELLED, ChatTurn, Sampling
from llmorch_common.errors import (
    PlatformError,
    already_exists,
    from_workflow_failure,
    not_found,
    resource_exhausted,
)
from llmorch_common.logs import bound
from llmorch_common.tracing import annotate, current_trace_id
from orchestrator_svc.config import OrchestratorSettings
from orchestrator_svc.identity.keys import PRIORITY_KEYS, Principal, PriorityClass
from orchestrator_svc.identity.limits import RateLimiter
from orchestrator_svc.inference.activities import SelectModelInput
from orchestrator_svc.inference.contracts import (
    CONTINUE,
    DispatchPolicy,
    InferenceInput,
    InferenceResult,
    ModelChoice,
    RagRequest,
    StreamCursor,
    StreamSnapshot,
)
from orchestrator_svc.inference.workflows import WATCH_STREAM_UPDATE, InferenceWorkflow
from orchestrator_svc.registry.service import Registry
from orchestrator_svc.retrieval.embedding_client import Embedded, EmbeddingClient
from orchestrator_svc.retrieval.vectorstore.base import VectorStore, scoped_collection

WORKFLOW_DURATION = Histogram(
    "llmorch_workflow_duration_seconds",
    "Request wall time as the API saw it, by workflow and outcome (OK or the status code)",
    ["workflow", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
TIME_TO_FIRST_TEXT = Histogram(
    "llmorch_request_time_to_first_token_seconds",
    "Streamed requests: arrival at the API to the first text relayed, queueing, retrieval and fallbacks included",
    ["model_id"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
FALLBACKS = Counter(
    "llmorch_fallbacks_total",
    "Models given up on within a request, by model and reason (the reason's text before its first colon)",
    ["model_id", "reason"],
)
QUEUE_WAIT = Histogram(
    "llmorch_queue_wait_seconds",
    "Time a generation waited in its model's queue, by tenant and priority class",
    ["tenant", "priority_class"],
    buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
WORKFLOW_ID_PREFIX = "inference-"

DIGEST_MEMO = "request_digest"

# The router as the API runs it for a request's first model (SelectionActivities.choose in the assembly).
FirstChooser = Callable[[SelectModelInput], Awaitable[ModelChoice]]


def dispatch_policy(settings: OrchestratorSettings) -> DispatchPolicy:
    """The per-request bounds the workflow follows; the settings are their only home."""
    return DispatchPolicy(
        generate_timeout_s=settings.generate_timeout_s,
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
        saturation_timeout_s=settings.saturation_timeout_s,
        generate_attempts=settings.generate_attempts,
        max_selections=settings.max_selections,
    )


def workflow_id(tenant: str, request_id: str) -> str:
    """The tenant is part of the id, so two tenants may use one request id and never reach each other's run
    (a tenant name has no dot)."""
    return f"{WORKFLOW_ID_PREFIX}{tenant}.{request_id}"


def fallback_reason_label(reason: str) -> str:
    """What failed without its message ("saturated", "generation failed after retries", "timed out (...)"), so
    the label has a handful of values."""
    return reason.partition(":")[0].strip()


@dataclass(frozen=True)
class InferenceRequest:
    """A validated request, as the servicer built it from the wire."""

    request_id: str
    caller: Principal  # from the API key: the tenant, its class, weight and limits
    messages: tuple[ChatTurn, ...]
    prompt: str
    sampling: Sampling
    model_id: str
    rag_collection: str
    rag_top_k: int
    # What makes two requests "the same" for idempotency: the request without its id, deterministically serialised.
    digest: str
    # After a fallback: continue the text so far on the next model, or restart (contracts.CONTINUE / RESTART).
    on_fallback: str = CONTINUE
    # A client that goes away cancels the request (DISCONNECT_POLICY_CANCEL) instead of leaving it running.
    cancel_on_disconnect: bool = False
    # None takes the key's default class.
    priority_class: PriorityClass | None = None

    @property
    def tenant(self) -> str:
        return self.caller.tenant

    @property
    def dispatch_class(self) -> PriorityClass:
        return self.priority_class or self.caller.policy.default_class

    def charge_tokens(self) -> int:
        """What a rate limit charges up front: the prompt, estimated at 4 characters a token (the API holds no
        tokenizer), plus max_tokens; settled to the real usage when the request ends."""
        chars = len(self.prompt) + sum(len(turn.content) for turn in self.messages)
        return chars // 4 + 1 + self.sampling.max_tokens


@contextlib.contextmanager
def observed(request: InferenceRequest) -> Iterator[None]:
    """The request's span gets what identifies it, and every line it logs its request and workflow ids."""
    wf_id = workflow_id(request.tenant, request.request_id)
    annotate(
        request_id=request.request_id,
        workflow_id=wf_id,
        tenant=request.tenant,
        priority_class=request.dispatch_class.value,
    )
    with bound(request_id=request.request_id, workflow_id=wf_id, tenant=request.tenant):
        yield


def observe_result(result: InferenceResult, request: InferenceRequest) -> None:
    """A finished request's queue wait (by tenant and class) and fallbacks in the metrics, and what answered it on
    its span."""
    QUEUE_WAIT.labels(request.tenant, request.dispatch_class.value).observe(result.queue_wait_ms / 1000)
    for fallback in result.fallbacks:
        FALLBACKS.labels(fallback.model_id, fallback_reason_label(fallback.reason)).inc()
    annotate(
        model_id=result.model_id,
        selection_reason=result.selection_reason,
        fallbacks=len(result.fallbacks),
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
    )


@dataclass(frozen=True)
class Selected:
    """The router chose a model; after a fallback a new one arrives, and the text so far stays unless a Reset
    follows."""

    model_id: str
    reason: str
    attempt: int


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Reset:
    """Discard every delta so far: the deltas that follow spell the answer from its start."""

    reason: str


@dataclass(frozen=True)
class Completed:
    result: InferenceResult


StreamEvent = Selected | Delta | Reset | Completed


class RequestState(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class RequestStatus:
    state: RequestState
    result: InferenceResult | None = None
    error: PlatformError | None = None


class InferenceService:
    def __init__(
        self,
        client: Client,
        settings: OrchestratorSettings,
        registry: Registry,
        store: VectorStore,
        embeddings: EmbeddingClient,
        limits: RateLimiter,
        choose_first: FirstChooser | None = None,
    ) -> None:
        """`choose_first` picks the first model of a request without retrieval before its run starts (saving the
        run a select_model activity); None leaves every selection to the workflow."""
        self._client = client
        self._choose_first = choose_first
        self._limits = limits
        self._settings = settings
        self._registry = registry
        self._store = store
        self._embeddings = embeddings
        self._in_flight = 0
        self._cancels: set[asyncio.Task[None]] = set()

    @contextlib.contextmanager
    def admitted(self) -> Iterator[None]:
        """Bound the requests one API replica holds open; beyond it, tell clients when to come back."""
        if self._in_flight >= self._settings.max_in_flight:
            raise resource_exhausted(f"{self._in_flight} requests in flight on this API replica", retry_after_s=1.0)
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    @contextlib.asynccontextmanager
    async def _limited(self, request: InferenceRequest) -> AsyncIterator[list[InferenceResult]]:
        """Admit the request under its key's rate limits (before any workflow starts) and settle its charge at the
        end; the caller appends the result it got, if any."""
        admission = await self._limits.admit(request.caller, request.charge_tokens())
        finished: list[InferenceResult] = []
        try:
            yield finished
        finally:
            used = finished[0].prompt_tokens + finished[0].completion_tokens if finished else None
            await asyncio.shield(self._limits.release(admission, used))

    async def generate(self, request: InferenceRequest) -> InferenceResult:
        started = time.perf_counter()
        with observed(request):
            async with self._limited(request) as finished:
                workflow_input = await self._workflow_input(request, stream=False)
                if self._settings.result_via_update:
                    finished.append(await self._generate_via_update(request, workflow_input, started))
                    return finished[0]
                handle, _ = await self._start(request, workflow_input)
                with self._cancelled_on_disconnect(request, handle):
                    finished.append(await self._result(handle, started, request))
                    return finished[0]

    async def _generate_via_update(
        self, request: InferenceRequest, workflow_input: InferenceInput, started: float
    ) -> InferenceResult:
        """Start the run and wait on its await_result update in one call; the answer comes once it is recorded."""
        options = self._start_options(request, workflow_input)
        operation = WithStartWorkflowOperation(InferenceWorkflow.run, workflow_input, **options)
        by_id = self._client.get_workflow_handle_for(InferenceWorkflow.run, options["id"])
        with self._cancelled_on_disconnect(request, by_id):
            try:
                # The SDK types a no-argument async update's result as its coroutine; it is the returned value.
                outcome: object = await self._client.execute_update_with_start_workflow(
                    InferenceWorkflow.await_result, start_workflow_operation=operation
                )
            except WorkflowAlreadyStartedError:
                outcome = None  # not this call's run: it must not be cancelled here, whatever happens next
                with contextlib.suppress(WorkflowAlreadyStartedError):
                    await operation.workflow_handle()  # the same error, taken so asyncio does not log it as lost
        if isinstance(outcome, InferenceResult):
            WORKFLOW_DURATION.labels("InferenceWorkflow", "OK").observe(time.perf_counter() - started)
            observe_result(outcome, request)
            return outcome
        # An earlier run has this id, or the run ended without a result: the run's own outcome answers.
        handle = await self._attach(workflow_input)
        with self._cancelled_on_disconnect(request, handle):
            return await self._result(handle, started, request)

    async def stream(self, request: InferenceRequest) -> AsyncGenerator[StreamEvent, None]:
        """Relay the run's text as it grows, by long-polling its watch_stream update, then its result.

        The deltas since the last Reset always spell the final text: whatever the run streamed, the result settles
        it (the tail the long-poll missed when the run closed, or a Reset and the whole text if they disagree)."""
        started = time.perf_counter()
        with observed(request):
            async with self._limited(request) as finished:
                async for event in self._stream(request, started):
                    if isinstance(event, Completed):
                        finished.append(event.result)
                    yield event

    async def _stream(self, request: InferenceRequest, started: float) -> AsyncGenerator[StreamEvent, None]:
        workflow_input = await self._workflow_input(request, stream=True)
        handle, started_here = await self._start(request, workflow_input)
        with self._cancelled_on_disconnect(request, handle):
            cursor = StreamCursor(attempt=0, offset=0, epoch=-1)
            first = workflow_input.first_choice
            if first and started_here:
                # This call started the run with its first model: announce it without a round trip to the run,
                # whose first watch_stream would only report that choice. (An attached run may have chosen
                # another, so it is asked.)
                yield Selected(first.model_id, first.reason, 1)
                cursor = StreamCursor(attempt=1, offset=0, epoch=0)
            streamed = ""
            first_text = True
            while True:
                try:
                    snapshot: StreamSnapshot = await handle.execute_update(
                        WATCH_STREAM_UPDATE, cursor, result_type=StreamSnapshot
                    )
                except RPCError as error:
                    if error.status != RPCStatusCode.NOT_FOUND:
                        raise
                    break  # the run already closed: its result below settles the stream
                if snapshot.attempt != cursor.attempt:
                    yield Selected(snapshot.model_id, snapshot.reason, snapshot.attempt)
                if snapshot.reset and streamed:
                    yield Reset(snapshot.reset_reason)
                if snapshot.reset:
                    streamed = ""
                if snapshot.text:
                    if first_text:
                        TIME_TO_FIRST_TEXT.labels(snapshot.model_id).observe(time.perf_counter() - started)
                        first_text = False
                    yield Delta(snapshot.text)
                    streamed += snapshot.text
                cursor = StreamCursor(snapshot.attempt, snapshot.offset + len(snapshot.text), snapshot.epoch)
                if snapshot.done:
                    break
            result = await self._result(handle, started, request)
            if not result.text.startswith(streamed):
                yield Reset("the final text differs from what was streamed")
                streamed = ""
            if len(result.text) > len(streamed):
                yield Delta(result.text[len(streamed) :])
            yield Completed(result)

    @contextlib.contextmanager
    def _cancelled_on_disconnect(
        self, request: InferenceRequest, handle: WorkflowHandle[InferenceWorkflow, InferenceResult]
    ) -> Iterator[None]:
        """With DISCONNECT_POLICY_CANCEL, a caller that goes away (its handler is cancelled or its stream closed
        early) cancels the run; otherwise the run goes on and can be reattached or fetched."""
        finished = False
        try:
            yield
            finished = True
        finally:
            if request.cancel_on_disconnect and not finished:
                task = asyncio.ensure_future(self._request_cancel(handle))
                self._cancels.add(task)
                task.add_done_callback(self._cancels.discard)

    async def _request_cancel(self, handle: WorkflowHandle[InferenceWorkflow, InferenceResult]) -> None:
        with contextlib.suppress(RPCError):
            await handle.cancel()

    async def cancel(self, tenant: str, request_id: str) -> RequestStatus:
        """Cancel a running request and wait until it has ended (its model stopped); an ended one is left as is."""
        status = await self.status(tenant, request_id)
        if status.state != RequestState.RUNNING:
            return status
        handle = self._client.get_workflow_handle_for(InferenceWorkflow.run, workflow_id(tenant, request_id))
        with contextlib.suppress(RPCError):  # it may have ended in the meantime: its status says how
            await handle.cancel()
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
        return await self.status(tenant, request_id)

    async def status(self, tenant: str, request_id: str) -> RequestStatus:
        """Another tenant's request is NOT_FOUND, exactly as a request that never existed."""
        handle = self._client.get_workflow_handle_for(InferenceWorkflow.run, workflow_id(tenant, request_id))
        try:
            description = await handle.describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise not_found(f"no request with id {request_id!r}") from None
            raise
        status = description.status
        if status == WorkflowExecutionStatus.RUNNING:
            return RequestStatus(RequestState.RUNNING)
        if status == WorkflowExecutionStatus.COMPLETED:
            result = await handle.result()
            # A cancelled run ends with the text it had (finish_reason cancelled): cancelled, with its partial text.
            state = RequestState.CANCELLED if result.finish_reason == CANCELLED else RequestState.COMPLETED
            return RequestStatus(state, result=result)
        if status in (WorkflowExecutionStatus.FAILED, WorkflowExecutionStatus.TIMED_OUT):
            try:
                await handle.result()
            except WorkflowFailureError as error:
                return RequestStatus(RequestState.FAILED, error=from_workflow_failure(error))
        return RequestStatus(RequestState.CANCELLED)

    async def embed(self, texts: list[str]) -> Embedded:
        return await self._embeddings.embed_with_counts(texts)

    async def _workflow_input(self, request: InferenceRequest, stream: bool) -> InferenceInput:
        known = self._registry.llm_ids()
        if request.model_id and request.model_id not in known:
            raise not_found(f"no LLM {request.model_id!r} is registered; known: {', '.join(sorted(known))}")
        rag = None
        if request.rag_collection:
            collection = scoped_collection(request.tenant, request.rag_collection)
            await self._store.get_collection(collection)  # NOT_FOUND before the workflow starts
            rag = RagRequest(
                collection, request.rag_top_k, self._settings.embedding_task_queue, self._settings.retrieval_mode
            )
        return InferenceInput(
            first_choice=None if rag else await self._first_choice(request),
            request_id=request.request_id,
            tenant=request.tenant,
            messages=request.messages,
            prompt=request.prompt,
            sampling=request.sampling,
            policy=dispatch_policy(self._settings),
            model_id=request.model_id,
            rag=rag,
            stream=stream,
            request_digest=request.digest,
            on_fallback=request.on_fallback,
            priority_class=request.dispatch_class.value,
            cache_ttl_s=self._cache_ttl_s(request.sampling),
            trace_id=current_trace_id(),
        )

    async def _first_choice(self, request: InferenceRequest) -> ModelChoice | None:
        """None when nothing can serve now: the workflow then selects, and fails, exactly as it did before."""
        if not self._choose_first:
            return None
        try:
            return await self._choose_first(SelectModelInput(request.model_id, attempt=1))
        except PlatformError:
            return None

    def _cache_ttl_s(self, sampling: Sampling) -> float:
        """Only a deterministic request is cached: temperature 0 or a seed gives the same answer every time."""
        deterministic = sampling.temperature == 0 or sampling.seed is not None
        return self._settings.cache_ttl_s if self._settings.redis_url and deterministic else 0.0

    def _start_options(self, caller_request: InferenceRequest, request: InferenceInput) -> dict[str, Any]:
        """How the request's workflow starts, whichever call starts it.

        Its Temporal priority (class, and the tenant as fairness key with the key's weight) is inherited by every
        activity it schedules, the generation on the model's queue included: a saturated model's queue is served
        by class first, then shared among tenants in proportion to their weights."""
        return {
            "id": workflow_id(request.tenant, request.request_id),
            "task_queue": self._settings.task_queue,
            "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
            "id_conflict_policy": WorkflowIDConflictPolicy.FAIL,
            "execution_timeout": timedelta(seconds=self._settings.request_timeout_s),
            "memo": {DIGEST_MEMO: request.request_digest},
            "priority": Priority(
                priority_key=PRIORITY_KEYS[caller_request.dispatch_class],
                fairness_key=caller_request.tenant,
                fairness_weight=caller_request.caller.policy.fairness_weight,
            ),
        }

    async def _start(
        self, caller_request: InferenceRequest, request: InferenceInput
    ) -> tuple[WorkflowHandle[InferenceWorkflow, InferenceResult], bool]:
        """Start the request's workflow, or attach to the run that already has its id, if it is the same request;
        the flag is True when this call started it."""
        try:
            handle = await self._client.start_workflow(
                InferenceWorkflow.run,
                request,
                **self._start_options(caller_request, request),
                # With a worker in this process, the first workflow task comes back in the start response.
                request_eager_start=True,
            )
        except WorkflowAlreadyStartedError:
            return await self._attach(request), False
        return handle, True

    async def _attach(self, request: InferenceInput) -> WorkflowHandle[InferenceWorkflow, InferenceResult]:
        """The run that already has this request's id, if it is the same request."""
        handle = self._client.get_workflow_handle_for(
            InferenceWorkflow.run, workflow_id(request.tenant, request.request_id)
        )
        description = await handle.describe()
        if await description.memo_value(DIGEST_MEMO, default="") != request.request_digest:
            raise already_exists(f"request_id {request.request_id!r} was used for a different request") from None
        return handle

    async def _result(
        self, handle: WorkflowHandle[InferenceWorkflow, InferenceResult], started: float, request: InferenceRequest
    ) -> InferenceResult:
        """Wait for the run's result, observing its duration since `started` (the call's arrival), its outcome and
        its queue wait by tenant and class."""
        outcome = "OK"
        try:
            result = await handle.result()
        except WorkflowFailureError as error:
            failure = from_workflow_failure(error)
            outcome = failure.code
            raise failure from None
        finally:
            WORKFLOW_DURATION.labels("InferenceWorkflow", outcome).observe(time.perf_counter() - started)
        observe_result(result, request)
        return result
