"""Generation lifecycle rules, fast: the real InferenceWorkflow, stream relay, generate activity and ModelService,
with the deterministic fake engine in-process and a fake select_model registered under the real activity name.

A replica "dies" here by its engine failing mid-generation with UNAVAILABLE (a test engine, not an `if TEST`
branch): Temporal retries the activity, which must resume where the stream stopped; a model that keeps failing is
left for the next one, which must continue the text. Real kills of real replicas are in test_generation_resume.py.
"""

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import TEST_TENANT, eventually, orchestrator_settings, record_history
from llmorch.internal.v1 import metadata_pb2
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from llmorch_common.contracts import CANCELLED, ChatTurn, Sampling
from llmorch_common.errors import PlatformError
from model_svc.config import ModelSettings
from model_svc.engine import EnginePool, FakeEngine, GenerationRequest, GenerationResult, Piece
from model_svc.server import ModelServicer, register
from model_svc.worker import ModelActivities, create_worker
from orchestrator_svc.config import OrchestratorSettings
from orchestrator_svc.identity.keys import Principal, Role
from orchestrator_svc.identity.limits import RateLimiter
from orchestrator_svc.identity.store import KeyStore
from orchestrator_svc.inference.activities import SELECT_MODEL_ACTIVITY, SelectModelInput
from orchestrator_svc.inference.contracts import CONTINUE, RESTART, InferenceResult, ModelChoice
from orchestrator_svc.inference.service import (
    Completed,
    Delta,
    FirstChooser,
    InferenceRequest,
    InferenceService,
    RequestState,
    Reset,
    Selected,
    StreamEvent,
)
from orchestrator_svc.inference.workflows import InferenceWorkflow


class CrashingEngine(FakeEngine):
    """Fails with UNAVAILABLE after `after` tokens while `crashes` remain, as a replica that dies mid-stream."""

    def __init__(self, model_id: str, crashes: list[int], after: int, token_ms: float) -> None:
        super().__init__(model_id, 4096, first_token_ms=5, token_ms=token_ms)
        self._crashes = crashes
        self._after = after

    def generate(
        self, request: GenerationRequest, on_delta: Callable[[Piece], None], cancelled: threading.Event
    ) -> GenerationResult:
        if self._crashes[0] <= 0:
            return super().generate(request, on_delta, cancelled)
        self._crashes[0] -= 1
        produced: list[Piece] = []

        def count(piece: Piece) -> None:
            produced.append(piece)
            on_delta(piece)
            if len(produced) + len(request.resume_token_ids) >= self._after:
                raise PlatformError("replica lost mid-generation", "UNAVAILABLE")

        return super().generate(request, count, cancelled)


@dataclass
class FakeModel:
    model_id: str
    servicer: ModelServicer
    server: grpc.aio.Server
    activities: ModelActivities
    worker: Worker
    crashes: list[int]
    context_limit: int = 4096
    runner: "asyncio.Task[None] | None" = None

    @property
    def task_queue(self) -> str:
        return f"llm.{self.model_id}"


@dataclass
class Harness:
    client: Client
    settings: OrchestratorSettings
    service: InferenceService
    limits: RateLimiter
    models: dict[str, FakeModel] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    async def add_model(
        self, name: str, crashes: int = 0, after: int = 10, token_ms: float = 1.0, context_limit: int = 4096
    ) -> FakeModel:
        model_id = f"{name}-{uuid.uuid4().hex[:6]}"
        budget = [crashes]
        engines = [CrashingEngine(model_id, budget, after, token_ms) for _ in range(8)]
        servicer = ModelServicer(metadata_pb2.ModelMetadata(model_id=model_id))
        servicer.pool = EnginePool(list(engines), admission_timeout_s=30)
        server = grpc.aio.server()
        register(server, servicer)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        activities = ModelActivities(f"127.0.0.1:{port}", self.client, ModelSettings().stream_flush_interval_s)
        worker = create_worker(self.client, f"llm.{model_id}", activities, max_concurrency=8)
        model = FakeModel(model_id, servicer, server, activities, worker, budget, context_limit)
        model.runner = asyncio.create_task(worker.run())
        self.models[name] = model
        self.order.append(name)
        return model

    @activity.defn(name=SELECT_MODEL_ACTIVITY)
    async def select_model(self, request: SelectModelInput) -> ModelChoice:
        for name in self.order:
            model = self.models[name]
            if model.model_id not in request.excluded:
                return ModelChoice(model.model_id, model.task_queue, "first-available", model.context_limit)
        raise PlatformError("no model left", "UNAVAILABLE")

    async def close(self) -> None:
        for model in self.models.values():
            await model.worker.shutdown()
            await model.activities.close()
            await model.server.stop(0)


class NoRegistry:
    def llm_ids(self) -> set[str]:
        return set()


def inference_service(
    client: Client, settings: OrchestratorSettings, limits: RateLimiter, choose_first: FirstChooser | None = None
) -> InferenceService:
    """The service with no registry, vector store or embeddings: these requests name no model and retrieve nothing."""
    return InferenceService(client, settings, NoRegistry(), None, None, limits, choose_first)  # type: ignore[arg-type]


@pytest.fixture
async def harness(temporal_client: Client, tmp_path: Path) -> AsyncIterator[Harness]:
    settings = orchestrator_settings(tmp_path, heartbeat_timeout_s=2.0, generate_attempts=3)
    keys = await KeyStore.open(f"sqlite:///{tmp_path / 'keys.db'}")
    limits = RateLimiter(keys, lease_ttl_s=60)
    service = inference_service(temporal_client, settings, limits)
    built = Harness(temporal_client, settings, service, limits)
    worker = Worker(
        temporal_client,
        task_queue=settings.task_queue,
        workflows=[InferenceWorkflow],
        activities=[built.select_model],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    async with worker:
        yield built
        await built.close()
    await keys.close()


def request(max_tokens: int = 24, seed: int = 0, **overrides: Any) -> InferenceRequest:
    values: dict[str, Any] = {
        "request_id": f"life-{uuid.uuid4().hex}",
        "caller": Principal("key", TEST_TENANT, Role.TENANT),
        "messages": (ChatTurn("user", f"question {seed}"),),
        "prompt": "",
        "sampling": Sampling(max_tokens=max_tokens, temperature=0.0),
        "model_id": "",
        "rag_collection": "",
        "rag_top_k": 5,
        "digest": uuid.uuid4().hex,
    }
    values.update(overrides)
    return InferenceRequest(**values)


@dataclass
class Streamed:
    events: list[StreamEvent]

    @property
    def result(self) -> InferenceResult:
        last = self.events[-1]
        assert isinstance(last, Completed)
        return last.result

    def client_text(self) -> str:
        """What a client that follows the protocol shows: deltas, cleared by each reset."""
        text = ""
        for event in self.events:
            if isinstance(event, Reset):
                text = ""
            elif isinstance(event, Delta):
                text += event.text
        return text

    def resets(self) -> list[Reset]:
        return [e for e in self.events if isinstance(e, Reset)]

    def selected(self) -> list[Selected]:
        return [e for e in self.events if isinstance(e, Selected)]

    def text_before(self, index: int) -> str:
        return "".join(e.text for e in self.events[:index] if isinstance(e, Delta))


async def stream(service: InferenceService, inference: InferenceRequest) -> Streamed:
    return Streamed([event async for event in service.stream(inference)])


async def keep_history(harness: Harness, result: InferenceResult, name: str) -> None:
    """For the replay tests and tools/bench/history_cost.py (with LLMORCH_RECORD_HISTORIES=1)."""
    record_history(await harness.client.get_workflow_handle(result.workflow_id).fetch_history(), name)


async def test_two_hundred_plain_streams_spell_the_final_text(harness: Harness) -> None:
    await harness.add_model("plain")
    semaphore = asyncio.Semaphore(10)

    async def one(index: int) -> Streamed:
        async with semaphore:
            return await stream(harness.service, request(max_tokens=8 + index % 13, seed=index))

    runs = await asyncio.gather(*(one(i) for i in range(200)))
    for run in runs:
        assert run.client_text() == run.result.text, "the deltas, joined, are the answer"
        assert not run.resets(), "nothing failed, so nothing is discarded"
        assert run.result.text and run.result.finish_reason == "length"


async def test_a_first_model_the_api_chose_is_announced_without_asking_the_run(harness: Harness) -> None:
    doomed = await harness.add_model("doomed", crashes=100, after=10, token_ms=5)
    backup = await harness.add_model("backup")
    service = inference_service(harness.client, harness.settings, harness.limits, harness.select_model)
    run = await stream(service, request(max_tokens=30))

    assert run.events[0] == Selected(doomed.model_id, "first-available", 1), "announced before any text"
    assert [s.model_id for s in run.selected()] == [doomed.model_id, backup.model_id], "the fallback still is"
    assert run.client_text() == run.result.text and not run.resets()
    history = await harness.client.get_workflow_handle(run.result.workflow_id).fetch_history()
    kinds = [event.event_type for event in history.events]
    # Without the API's choice, the run's first watch_stream completes at once, only to report the selection.
    assert kinds.index(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED) < kinds.index(
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED
    ), "no watch_stream completed before there was text"


async def test_a_retry_on_the_same_model_resumes_where_the_stream_stopped(harness: Harness) -> None:
    model = await harness.add_model("flaky", crashes=1, after=12, token_ms=5)
    uninterrupted = await stream(harness.service, request(max_tokens=40, seed=7))
    model.crashes[0] = 1
    resumed = await stream(harness.service, request(max_tokens=40, seed=7))

    await keep_history(harness, uninterrupted.result, "inference_stream_plain")
    await keep_history(harness, resumed.result, "inference_stream_resumed")
    assert resumed.client_text() == resumed.result.text == uninterrupted.result.text
    assert not resumed.resets(), "a resumed stream only pauses"
    assert [s.model_id for s in resumed.selected()] == [model.model_id]
    (part,) = resumed.result.parts
    assert part.attempts == 2 and part.outcome == "completed"
    assert 0 < part.resumed_at_tokens <= 12, "it resumed from what the workflow recorded before the failure"
    assert part.generated_tokens == 40 - part.resumed_at_tokens
    assert resumed.result.completion_tokens == 40


async def test_a_fallback_continues_the_text_already_streamed(harness: Harness) -> None:
    doomed = await harness.add_model("doomed", crashes=100, after=10, token_ms=5)
    backup = await harness.add_model("backup")
    run = await stream(harness.service, request(max_tokens=30))

    await keep_history(harness, run.result, "inference_fallback_continued")
    assert run.client_text() == run.result.text
    assert not run.resets()
    assert [s.model_id for s in run.selected()] == [doomed.model_id, backup.model_id]
    second = run.events.index(run.selected()[1])
    before = run.text_before(second)
    assert before and run.result.text.startswith(before), "the text streamed before the failure is kept"
    assert doomed.model_id in before and backup.model_id in run.result.text[len(before) :]
    failed, completed = run.result.parts
    assert (failed.model_id, completed.model_id) == (doomed.model_id, backup.model_id)
    assert failed.outcome.startswith("failed") and completed.outcome == "completed"
    assert completed.carried_chars == len(before) and completed.resumed_at_tokens == 0
    assert run.result.completion_tokens == 30, "the budget is shared: the backup generates what is left"
    assert [f.model_id for f in run.result.fallbacks] == [doomed.model_id]


async def test_a_fallback_with_restart_signals_a_reset(harness: Harness) -> None:
    doomed = await harness.add_model("doomed", crashes=100, after=10, token_ms=5)
    backup = await harness.add_model("backup")
    run = await stream(harness.service, request(max_tokens=30, on_fallback=RESTART))

    assert run.client_text() == run.result.text
    assert len(run.resets()) == 1
    assert run.result.text.startswith(backup.model_id) and doomed.model_id not in run.result.text
    assert [p.outcome.split(" ")[0] for p in run.result.parts] == ["discarded", "completed"]
    assert CONTINUE != RESTART


async def test_a_fallback_whose_context_cannot_hold_the_text_restarts_with_a_reset(harness: Harness) -> None:
    await harness.add_model("doomed", crashes=100, after=10, token_ms=30)  # several flushes before it dies
    backup = await harness.add_model("small", context_limit=100)
    run = await stream(harness.service, request(max_tokens=30))

    assert run.client_text() == run.result.text
    assert [r.reason for r in run.resets()] == [
        f"fallback to {backup.model_id} restarts the answer (the text so far does not fit)"
    ]
    assert run.result.text.startswith(backup.model_id)


async def test_cancel_stops_the_generation_frees_the_model_and_keeps_the_partial_text(harness: Harness) -> None:
    model = await harness.add_model("slow", token_ms=50)
    inference = request(max_tokens=400)
    events: list[StreamEvent] = []

    async def follow() -> None:
        async for event in harness.service.stream(inference):
            events.append(event)

    follower = asyncio.create_task(follow())

    async def generating() -> bool:
        return model.servicer.in_flight == 1 and sum(isinstance(e, Delta) for e in events) >= 2

    await eventually(generating, timeout_s=10)
    status = await harness.service.cancel(inference.tenant, inference.request_id)
    assert status.state == RequestState.CANCELLED
    # The replica frees the context as soon as its stream is cancelled, which the activity does not wait for.
    await eventually(lambda: asyncio.sleep(0, model.servicer.in_flight == 0), timeout_s=2)
    assert status.result is not None and status.result.finish_reason == CANCELLED
    await asyncio.wait_for(follower, 10)
    streamed = Streamed(events)
    assert streamed.result.text == status.result.text == streamed.client_text()
    assert status.result.text and len(status.result.text.split()) < 400

    await keep_history(harness, status.result, "inference_cancelled")
    again = await harness.service.status(inference.tenant, inference.request_id)
    assert again.state == RequestState.CANCELLED and again.result == status.result
    assert (await harness.service.cancel(inference.tenant, inference.request_id)).state == RequestState.CANCELLED, (
        "idempotent"
    )


async def test_a_disconnect_cancels_only_when_asked(harness: Harness) -> None:
    model = await harness.add_model("slow", token_ms=30)

    async def leave_early(inference: InferenceRequest) -> None:
        events = harness.service.stream(inference)
        async for event in events:
            if isinstance(event, Delta):
                break
        await events.aclose()

    kept = request(max_tokens=60)
    await leave_early(kept)
    cancelled = request(max_tokens=400, cancel_on_disconnect=True)
    await leave_early(cancelled)

    async def ended(request_id: str, state: RequestState) -> bool:
        status = await harness.service.status(TEST_TENANT, request_id)
        assert status.state == state, f"{request_id}: {status.state}"
        return True

    await eventually(lambda: ended(cancelled.request_id, RequestState.CANCELLED), timeout_s=15)
    await eventually(lambda: ended(kept.request_id, RequestState.COMPLETED), timeout_s=15)

    async def idle() -> bool:
        assert model.servicer.in_flight == 0, f"{model.servicer.in_flight} generations still running"
        return True

    await eventually(idle, timeout_s=5)


async def test_cancelling_an_unknown_request_is_not_found(harness: Harness) -> None:
    with pytest.raises(PlatformError) as error:
        await harness.service.cancel(TEST_TENANT, f"never-{uuid.uuid4().hex}")
    assert error.value.code == "NOT_FOUND"


async def test_update_with_start_answers_as_eager_start_and_result_do(harness: Harness) -> None:
    """The bench's A/B arm ORCH_RESULT_VIA_UPDATE: the run's own recorded result, the same request attaches to its
    run, another request under its id is ALREADY_EXISTS, and a run that fails answers with its own failure."""
    await harness.add_model("plain")
    settings = harness.settings.model_copy(update={"result_via_update": True})
    via_update = inference_service(harness.client, settings, harness.limits)
    inference = request(max_tokens=12)
    result = await via_update.generate(inference)
    assert result.completion_tokens == 12 and result.text and result.workflow_id
    assert (await harness.service.status(inference.tenant, inference.request_id)).result == result
    assert await via_update.generate(inference) == result
    with pytest.raises(PlatformError) as conflict:
        await via_update.generate(replace(inference, digest="another request"))
    assert conflict.value.code == "ALREADY_EXISTS"
    harness.order.clear()
    await harness.add_model("broken", crashes=100, after=1)
    failures = []
    for service in (via_update, harness.service):
        with pytest.raises(PlatformError) as failed:
            await service.generate(request(max_tokens=12))
        failures.append((failed.value.code, failed.value.message))
    assert failures[0] == failures[1] and "no model left" in failures[0][1]
