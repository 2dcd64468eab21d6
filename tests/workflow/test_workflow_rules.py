"""Every rule of InferenceWorkflow in seconds: fakes registered under the real activity names, no model processes.

As in samples-python's tests/hello/hello_activity_test.py, a function decorated with the real activity name stands
in for the real one: `select_model` and `retrieve` run as local activities on an in-process orchestrator worker,
and each model's `generate` (and the embedding model's `embed`) runs on an in-process worker on its own task queue.
The Temporal dev server is real, so timeouts, retries, signals and updates behave as in production.
"""

import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest
from helpers import eventually
from temporalio import activity
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from llmorch_common.contracts import (
    EMBED_ACTIVITY,
    GENERATE_ACTIVITY,
    STOP,
    STREAM_SIGNAL,
    ChatTurn,
    EmbedInput,
    EmbedOutput,
    GenerateInput,
    GenerateOutput,
    Sampling,
    StreamDelta,
)
from llmorch_common.payload_codec import PayloadSettings, data_converter, parse_keys
from orchestrator_svc.inference.activities import SELECT_MODEL_ACTIVITY, SelectionActivities, SelectModelInput
from orchestrator_svc.inference.contracts import (
    DispatchPolicy,
    FallbackRecord,
    InferenceInput,
    InferenceResult,
    ModelChoice,
    RagRequest,
    StreamCursor,
    StreamSnapshot,
)
from orchestrator_svc.inference.prompting import augment, fit_citations
from orchestrator_svc.inference.workflows import WATCH_STREAM_UPDATE, InferenceWorkflow
from orchestrator_svc.registry.records import Hardware, Health, ModelMetadata, ModelType, RegisteredModel
from orchestrator_svc.retrieval.activities import RETRIEVE_ACTIVITY, CitationRecord, RetrieveInput

pytestmark = pytest.mark.timeout(60)

# Short bounds so a timeout or a retry costs a second, not the production half minute.
FAST = DispatchPolicy(
    generate_timeout_s=10, heartbeat_timeout_s=2, saturation_timeout_s=1, generate_attempts=2, max_selections=3
)
QUESTION = "What does yield do?"
# Every test run has this bound, as the API gives each request its request_timeout_s.
REQUEST_TIMEOUT = timedelta(seconds=30)
CRASHED = "generation failed after retries: INTERNAL: replica crashed"
SATURATED = "saturated: no worker started the generation in time"
# The timeline after the first model is chosen, when it fails for good and the second one answers.
FIRST_FAILS_SECOND_ANSWERS = [
    "schedule generate on first",
    "activity failed INTERNAL",
    "local select_model",
    "schedule generate on second",
    "activity completed",
    "workflow completed",
]

# --- fakes, registered under the real activity names ------------------------------------------------------------

Script = Callable[[GenerateInput], Awaitable[str]]


def answers(text: str) -> Script:
    async def script(request: GenerateInput) -> str:
        return text

    return script


def fails(error: ApplicationError) -> Script:
    async def script(request: GenerateInput) -> str:
        raise error

    return script


def crash() -> ApplicationError:
    """A replica-side failure that is not the input's fault: retried, then a reason to fall back."""
    return ApplicationError("replica crashed", type="INTERNAL")


class FakeModel:
    """One model: its own task queue and a scripted `generate` that records every call it gets."""

    def __init__(self, model_id: str, script: Script | None = None, context_limit: int = 4096) -> None:
        self.model_id = model_id
        self.task_queue = f"llm.{model_id}.{uuid.uuid4().hex[:8]}"
        self.context_limit = context_limit
        self.script = script or answers(f"answer from {model_id}")
        self.received: list[GenerateInput] = []
        self.activity_attempts: list[int] = []

    def choice(self, reason: str = "default", queued: bool = False) -> ModelChoice:
        return ModelChoice(self.model_id, self.task_queue, reason, self.context_limit, queued)

    @activity.defn(name=GENERATE_ACTIVITY)
    async def generate(self, request: GenerateInput) -> GenerateOutput:
        self.received.append(request)
        self.activity_attempts.append(activity.info().attempt)
        text = await self.script(request)
        return GenerateOutput(text, STOP, 10, len(text.split()), 1.0, 2.0, self.model_id)


class FakeRouter:
    """`select_model` over a fixed preference list: the first choice not excluded, else the routing verdict."""

    def __init__(self, *choices: ModelChoice) -> None:
        self.choices = choices
        self.received: list[SelectModelInput] = []

    @activity.defn(name=SELECT_MODEL_ACTIVITY)
    async def select_model(self, request: SelectModelInput) -> ModelChoice:
        self.received.append(request)
        for choice in self.choices:
            if choice.model_id not in request.excluded:
                return choice
        tried = ", ".join(f"{m}: failed earlier in this request" for m in request.excluded)
        raise ApplicationError(f"no model can serve this request ({tried})", type="UNAVAILABLE", non_retryable=True)


@dataclass
class FakeKnowledge:
    """The embedding model's `embed` (on its own queue) and the orchestrator's `retrieve` (local) over fixed hits."""

    hits: list[CitationRecord]
    vector: list[float] = field(default_factory=lambda: [0.6, 0.8, 0.0])
    task_queue: str = field(default_factory=lambda: f"embedding.minilm.{uuid.uuid4().hex[:8]}")
    embedded: list[EmbedInput] = field(default_factory=list)
    searched: list[RetrieveInput] = field(default_factory=list)

    @activity.defn(name=EMBED_ACTIVITY)
    async def embed(self, request: EmbedInput) -> EmbedOutput:
        self.embedded.append(request)
        return EmbedOutput([self.vector for _ in request.texts], [len(t.split()) for t in request.texts])

    @activity.defn(name=RETRIEVE_ACTIVITY)
    async def retrieve(self, request: RetrieveInput) -> list[CitationRecord]:
        self.searched.append(request)
        return self.hits[: request.top_k]


# --- harness ---------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def workers(
    client: Client,
    select_model: Callable[[SelectModelInput], Awaitable[ModelChoice]],
    models: list[FakeModel],
    knowledge: FakeKnowledge | None = None,
) -> AsyncIterator[str]:
    """The orchestrator worker on a fresh queue (yielded), plus one worker per model (and the embedding model)."""
    orchestrator_queue = f"orchestrator-{uuid.uuid4().hex[:8]}"
    local: list[Callable[..., Any]] = [select_model]
    remote = [Worker(client, task_queue=m.task_queue, activities=[m.generate]) for m in models]
    if knowledge:
        local.append(knowledge.retrieve)
        remote.append(Worker(client, task_queue=knowledge.task_queue, activities=[knowledge.embed]))
    orchestrator = Worker(
        client,
        task_queue=orchestrator_queue,
        workflows=[InferenceWorkflow],
        activities=local,
        workflow_runner=UnsandboxedWorkflowRunner(),  # as production runs by default (app.create_worker)
    )
    async with contextlib.AsyncExitStack() as stack:
        for worker in [orchestrator, *remote]:
            await stack.enter_async_context(worker)
        yield orchestrator_queue


def inference(
    policy: DispatchPolicy = FAST, rag: RagRequest | None = None, stream: bool = False, max_tokens: int = 64
) -> InferenceInput:
    return InferenceInput(
        request_id=f"rules-{uuid.uuid4().hex[:12]}",
        messages=(ChatTurn("user", QUESTION),),
        prompt="",
        sampling=Sampling(max_tokens=max_tokens),
        rag=rag,
        stream=stream,
        policy=policy,
    )


async def start(client: Client, task_queue: str, request: InferenceInput) -> WorkflowHandle[Any, InferenceResult]:
    return await client.start_workflow(
        InferenceWorkflow.run,
        request,
        id=f"inference-{request.request_id}",
        task_queue=task_queue,
        execution_timeout=REQUEST_TIMEOUT,
    )


async def workflow_failure(handle: WorkflowHandle[Any, InferenceResult]) -> ApplicationError:
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError), cause
    return cause


async def events(handle: WorkflowHandle[Any, Any], kind: "EventType.ValueType") -> list[HistoryEvent]:
    return [e for e in (await handle.fetch_history()).events if e.event_type == kind]


async def timeline(handle: WorkflowHandle[Any, Any]) -> list[str]:
    """The history as the ordered decisions a reader cares about, with task queues named by their model."""
    # The session's payload key (tests/conftest.py) sealed the signals: open them as the workers do.
    converter = data_converter(parse_keys(PayloadSettings().keys))
    lines: list[str] = []
    for event in (await handle.fetch_history()).events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_MARKER_RECORDED:
            if event.marker_recorded_event_attributes.marker_name != "core_local_activity":
                continue  # a patch marker (workflow.patched): versioning, not a decision
            # A local activity's result is a marker; its details name the activity.
            details = json.loads(event.marker_recorded_event_attributes.details["data"].payloads[0].data)
            lines.append(f"local {details['activity_type']}")
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled = event.activity_task_scheduled_event_attributes
            model_id = scheduled.task_queue.name.split(".")[1]  # every queue here is <kind>.<model_id>.<random>
            lines.append(f"schedule {scheduled.activity_type.name} on {model_id}")
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            lines.append("activity completed")
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            failure = event.activity_task_failed_event_attributes.failure
            lines.append(f"activity failed {failure.application_failure_info.type}")
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
            failure = event.activity_task_timed_out_event_attributes.failure
            timeout = TimeoutType.Name(failure.timeout_failure_info.timeout_type).removeprefix("TIMEOUT_TYPE_")
            lines.append(f"activity timed out {timeout}")
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            signal = event.workflow_execution_signaled_event_attributes
            (delta,) = await converter.decode(signal.input.payloads, [StreamDelta])
            lines.append(f"signal attempt {delta.attempt}")
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            lines.append("workflow completed")
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            failure = event.workflow_execution_failed_event_attributes.failure
            lines.append(f"workflow failed {failure.application_failure_info.type}")
    return lines


# --- fallback ----------------------------------------------------------------------------------------------------


async def test_failed_model_is_excluded_and_the_next_one_answers(temporal_client: Client) -> None:
    first, second = FakeModel("first", fails(crash())), FakeModel("second")
    router = FakeRouter(first.choice("default"), second.choice("priority"))
    async with workers(temporal_client, router.select_model, [first, second]) as queue:
        handle = await start(temporal_client, queue, inference())
        result = await handle.result()

    assert first.activity_attempts == [1, 2], "retried up to generate_attempts before giving up on the model"
    assert router.received == [SelectModelInput("", (), 1), SelectModelInput("", ("first",), 2)]
    assert result.model_id == "second"
    assert result.selection_reason == "priority"
    assert result.text == "answer from second"
    assert result.fallbacks == (FallbackRecord("first", CRASHED),)
    assert await timeline(handle) == ["local select_model", *FIRST_FAILS_SECOND_ANSWERS]


async def test_the_apis_first_choice_replaces_the_first_selection_and_a_fallback_selects_again(
    temporal_client: Client,
) -> None:
    first, second = FakeModel("first", fails(crash())), FakeModel("second")
    router = FakeRouter(second.choice("priority"))
    async with workers(temporal_client, router.select_model, [first, second]) as queue:
        handle = await start(temporal_client, queue, replace(inference(), first_choice=first.choice("default")))
        result = await handle.result()

    assert router.received == [SelectModelInput("", ("first",), 2)], "only the fallback asked the router"
    assert (result.model_id, result.fallbacks) == ("second", (FallbackRecord("first", CRASHED),))
    assert await timeline(handle) == FIRST_FAILS_SECOND_ANSWERS, "no selection before the first generate"


# --- capacity: queueing and saturation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queued", "schedule_to_start"),
    [(True, REQUEST_TIMEOUT), (False, timedelta(seconds=FAST.saturation_timeout_s))],
    ids=["queued-waits-as-long-as-the-request", "not-queued-is-bounded-by-saturation"],
)
async def test_generate_start_bound_depends_on_whether_the_choice_queued(
    temporal_client: Client, queued: bool, schedule_to_start: timedelta
) -> None:
    model = FakeModel("only")
    router = FakeRouter(model.choice("default (all models at capacity; queued)" if queued else "default", queued))
    async with workers(temporal_client, router.select_model, [model]) as queue:
        handle = await start(temporal_client, queue, inference())
        result = await handle.result()

    assert result.model_id == "only" and result.fallbacks == ()
    (scheduled,) = await events(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    attributes = scheduled.activity_task_scheduled_event_attributes
    assert attributes.task_queue.name == model.task_queue
    # A queued generate asks for no schedule-to-start bound, so the server records the run's own bound:
    # a queued request waits for capacity as long as the request lives, instead of counting as saturated.
    assert attributes.schedule_to_start_timeout.ToTimedelta() == schedule_to_start
    assert attributes.heartbeat_timeout.ToTimedelta() == timedelta(seconds=FAST.heartbeat_timeout_s)
    assert attributes.start_to_close_timeout.ToTimedelta() == timedelta(seconds=FAST.generate_timeout_s)


async def test_saturated_model_times_out_before_start_and_falls_back(temporal_client: Client) -> None:
    saturated, spare = FakeModel("saturated"), FakeModel("spare")
    router = FakeRouter(saturated.choice("default"), spare.choice("priority"))
    # Nothing polls the saturated model's queue, as when all its replicas are busy with other requests.
    async with workers(temporal_client, router.select_model, [spare]) as queue:
        handle = await start(temporal_client, queue, inference())
        result = await handle.result()

    assert saturated.received == []
    assert result.model_id == "spare"
    assert result.fallbacks == (FallbackRecord("saturated", SATURATED),)
    assert result.fallbacks[0].reason.startswith("saturated")
    assert await timeline(handle) == [
        "local select_model",
        "schedule generate on saturated",
        "activity timed out SCHEDULE_TO_START",
        "local select_model",
        "schedule generate on spare",
        "activity completed",
        "workflow completed",
    ]


def registered(
    model: FakeModel, in_flight: int, capacity: int = 1, priority: int = 0, default: bool = False, order: int = 0
) -> RegisteredModel:
    return RegisteredModel(
        metadata=ModelMetadata(
            model_id=model.model_id,
            model_name=model.model_id,
            model_type=ModelType.LLM,
            priority=priority,
            default_flag=default,
            max_concurrency=capacity,
            context_limit=model.context_limit,
            hardware=Hardware.CPU,
            endpoint=f"{model.model_id}:1",
            task_queue=model.task_queue,
        ),
        registration_order=order,
        health=Health.SERVING,
        in_flight=in_flight,
        capacity=capacity,
        replicas=(),
    )


@pytest.mark.parametrize(
    ("default_in_flight", "spare_in_flight", "chosen", "reason", "queued"),
    [
        (1, 0, "spare", "priority", False),
        (1, 1, "default", "default (all models at capacity; queued)", True),
    ],
    ids=["default-at-capacity-is-skipped", "all-at-capacity-queues-on-default"],
)
async def test_real_select_model_skips_models_at_capacity(
    temporal_client: Client,
    default_in_flight: int,
    spare_in_flight: int,
    chosen: str,
    reason: str,
    queued: bool,
) -> None:
    default, spare = FakeModel("default"), FakeModel("spare")
    listing = [
        registered(default, default_in_flight, priority=1, default=True, order=1),
        registered(spare, spare_in_flight, priority=5, order=2),
    ]

    async def list_models() -> list[RegisteredModel]:
        return listing

    # The real activity and router over a registry view: only the registry and the models are faked.
    selection = SelectionActivities(list_models)
    async with workers(temporal_client, selection.select_model, [default, spare]) as queue:
        handle = await start(temporal_client, queue, inference())
        result = await handle.result()

    assert (result.model_id, result.selection_reason, result.fallbacks) == (chosen, reason, ())
    (scheduled,) = await events(handle, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    attributes = scheduled.activity_task_scheduled_event_attributes
    assert attributes.task_queue.name == {"default": default, "spare": spare}[chosen].task_queue
    expected_bound = REQUEST_TIMEOUT if queued else timedelta(seconds=FAST.saturation_timeout_s)
    assert attributes.schedule_to_start_timeout.ToTimedelta() == expected_bound


# --- verdicts that end the request ------------------------------------------------------------------------------


async def nothing_left_to_serve(client: Client) -> tuple[WorkflowHandle[Any, InferenceResult], FakeModel, FakeRouter]:
    """The only model fails; the second selection, with it excluded, answers the routing verdict UNAVAILABLE."""
    only = FakeModel("only", fails(crash()))
    router = FakeRouter(only.choice("default"))
    async with workers(client, router.select_model, [only]) as queue:
        handle = await start(client, queue, inference())
        with contextlib.suppress(WorkflowFailureError):
            await handle.result()
    return handle, only, router


async def test_nothing_left_to_serve_fails_unavailable_naming_what_was_tried(temporal_client: Client) -> None:
    handle, only, router = await nothing_left_to_serve(temporal_client)
    error = await workflow_failure(handle)

    assert only.activity_attempts == [1, 2]
    assert error.type == "UNAVAILABLE" and error.non_retryable
    assert "no model can serve this request (only: failed earlier in this request)" in error.message
    expected = [SelectModelInput("", (), 1), SelectModelInput("", ("only",), 2)]
    assert router.received == expected, "a verdict is not retried"
    assert await timeline(handle) == [
        "local select_model",
        "schedule generate on only",
        "activity failed INTERNAL",
        "local select_model",
        "workflow failed UNAVAILABLE",
    ]


async def test_unavailable_after_fallbacks_also_gives_why_each_model_failed(temporal_client: Client) -> None:
    handle, _, _ = await nothing_left_to_serve(temporal_client)
    error = await workflow_failure(handle)

    assert f"tried: only ({CRASHED})" in error.message


async def test_input_error_is_final_without_retry_or_fallback(temporal_client: Client) -> None:
    too_long = ApplicationError(
        "prompt is 5000 tokens; the context holds 4096", type="OUT_OF_RANGE", non_retryable=True
    )
    first, second = FakeModel("first", fails(too_long)), FakeModel("second")
    router = FakeRouter(first.choice("default"), second.choice("priority"))
    async with workers(temporal_client, router.select_model, [first, second]) as queue:
        handle = await start(temporal_client, queue, inference())
        error = await workflow_failure(handle)

    assert error.type == "OUT_OF_RANGE"
    assert error.message == "prompt is 5000 tokens; the context holds 4096"
    assert first.activity_attempts == [1], "another attempt would be rejected the same way"
    assert second.received == [] and len(router.received) == 1
    assert await timeline(handle) == [
        "local select_model",
        "schedule generate on first",
        "activity failed OUT_OF_RANGE",
        "workflow failed OUT_OF_RANGE",
    ]


# --- streaming ---------------------------------------------------------------------------------------------------


async def signal_deltas(request: GenerateInput, *texts: str) -> None:
    """What the model worker does while it streams: each batch of text is a signal to the requesting workflow."""
    workflow = activity.client().get_workflow_handle(request.stream_to_workflow_id)
    for text in texts:
        await workflow.signal(STREAM_SIGNAL, StreamDelta(request.attempt, text))


async def watch(handle: WorkflowHandle[Any, InferenceResult], seen: list[StreamSnapshot]) -> None:
    """The API's long-poll loop (api.py `_stream`): advance the cursor by what each snapshot carried."""
    cursor = StreamCursor(attempt=0, offset=0)
    while True:
        try:
            snapshot = await handle.execute_update(WATCH_STREAM_UPDATE, cursor, result_type=StreamSnapshot)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            return  # the run already closed
        seen.append(snapshot)
        cursor = StreamCursor(snapshot.attempt, snapshot.offset + len(snapshot.text))
        if snapshot.done:
            return


def streamed_text(seen: list[StreamSnapshot], attempt: int) -> str:
    return "".join(s.text for s in seen if s.attempt == attempt)


async def until(condition: Callable[[], bool]) -> None:
    async def check() -> bool:
        return condition()

    await eventually(check)


async def long_poll_parked(handle: WorkflowHandle[Any, Any]) -> bool:
    """True while a watch_stream update is accepted and not yet answered: the client is waiting on the workflow."""
    kinds = [e.event_type for e in (await handle.fetch_history()).events]
    accepted = kinds.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)
    return accepted > kinds.count(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED)


# --- grounding ---------------------------------------------------------------------------------------------------

CITED = re.compile(r"^\[(\d+)\] \(([^)]+)\)", re.MULTILINE)


def cited_sources(request: GenerateInput) -> list[str]:
    """The sources of the numbered context blocks in the grounded question the model was sent."""
    (turn,) = request.messages
    return [source for _, source in CITED.findall(turn.content)]


async def test_grounding_is_fitted_to_each_chosen_models_context(temporal_client: Client) -> None:
    hits = [CitationRecord(f"doc-{i}#0", f"doc-{i}", 0.9 - i / 10, f"chunk {i} " + "x" * 1200) for i in range(5)]
    knowledge = FakeKnowledge(hits)
    small = FakeModel("small", fails(crash()), context_limit=1024)
    large = FakeModel("large", context_limit=8192)
    router = FakeRouter(small.choice("default"), large.choice("priority"))
    request = inference(rag=RagRequest("docs", top_k=5, embedding_task_queue=knowledge.task_queue))
    async with workers(temporal_client, router.select_model, [small, large], knowledge) as queue:
        handle = await start(temporal_client, queue, request)
        result = await handle.result()

    assert knowledge.embedded == [EmbedInput((QUESTION,))]
    assert knowledge.searched == [RetrieveInput("docs", knowledge.vector, 5, QUESTION)]
    fitted_small = fit_citations(tuple(hits), len(QUESTION), 1024, request.sampling.max_tokens)
    fitted_large = fit_citations(tuple(hits), len(QUESTION), 8192, request.sampling.max_tokens)
    assert 0 < len(fitted_small) < len(fitted_large) == 5
    sent_small, sent_large = small.received[0], large.received[0]
    assert cited_sources(sent_small) == [c.source for c in fitted_small] == ["doc-0", "doc-1"]
    assert cited_sources(sent_large) == [c.source for c in fitted_large]
    assert sent_small.messages == augment(request, fitted_small).messages
    assert sent_large.messages == augment(request, fitted_large).messages
    assert result.model_id == "large"
    assert result.citations == fitted_large, "the citations are those the answering model was grounded on"
    assert await timeline(handle) == [
        "schedule embed on minilm",
        "activity completed",
        "local retrieve",
        "local select_model",
        "schedule generate on small",
        "activity failed INTERNAL",
        "local select_model",
        "schedule generate on large",
        "activity completed",
        "workflow completed",
    ]


async def test_a_rag_request_without_an_embedding_worker_fails_unavailable_within_the_saturation_bound(
    temporal_client: Client,
) -> None:
    model = FakeModel("idle")
    router = FakeRouter(model.choice("default"))
    unserved = FakeKnowledge([])  # its queue, but no worker polls it
    request = inference(rag=RagRequest("docs", top_k=5, embedding_task_queue=unserved.task_queue))
    async with workers(temporal_client, router.select_model, [model]) as queue:
        handle = await start(temporal_client, queue, request)
        failure = await workflow_failure(handle)

    assert failure.type == "UNAVAILABLE"
    assert "no embedding worker took the query within 1 s" in failure.message, failure.message
    assert not model.received and not router.received, "nothing was generated without the retrieval"
