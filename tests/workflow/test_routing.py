"""Registry, health-fed routing, capacity and fallback, through real workflows on a real Temporal dev server.

Replicas here run the real ModelService, worker and registration with the deterministic fake engine.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from helpers import (
    Orchestrator,
    eventually,
    fake_replica,
    model_process,
    orchestrator_settings,
    record_history,
    start_orchestrator,
    stop_orchestrator,
)
from llmorch.internal.v1 import metadata_pb2, registry_pb2
from llmorch.v1 import orchestrator_pb2, types_pb2
from prometheus_client import REGISTRY
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from model_svc.replica import ModelReplica
from tools.stack import Child

pytestmark = pytest.mark.slow
StartReplica = Callable[..., Awaitable[ModelReplica]]


@pytest.fixture
async def orchestrator(temporal_client: Client, tmp_path: Path) -> AsyncIterator[Orchestrator]:
    started = await start_orchestrator(temporal_client, orchestrator_settings(tmp_path))
    yield started
    await stop_orchestrator(started)


@pytest.fixture
async def start_replica(orchestrator: Orchestrator, temporal_address: str) -> AsyncIterator[StartReplica]:
    replicas: list[ModelReplica] = []

    async def start(model_id: str, **settings: Any) -> ModelReplica:
        replica = fake_replica(model_id, temporal_address, orchestrator.internal_address, **settings)
        await replica.start()
        replicas.append(replica)
        await wait_health(orchestrator, model_id, types_pb2.HEALTH_STATE_SERVING)
        return replica

    yield start
    for replica in replicas:
        await replica.drain()


async def start_doomed_default(
    orchestrator: Orchestrator, start_replica: StartReplica, temporal_address: str, tmp: Path, prefix: str
) -> Child:
    """A slow default model in its own process (so a test can kill it) and an in-process backup, `<prefix>-backup`."""
    doomed = model_process(
        f"{prefix}-doomed",
        temporal_address,
        orchestrator.api.internal_port,
        tmp,
        fake_token_ms=100,
        default_flag="true",
        priority=9,
    )
    await doomed.start()
    await start_replica(f"{prefix}-backup", priority=1)
    await wait_health(orchestrator, f"{prefix}-doomed", types_pb2.HEALTH_STATE_SERVING)
    return doomed


async def listed(orchestrator: Orchestrator) -> dict[str, orchestrator_pb2.Model]:
    reply = await orchestrator.stub.ListModels(orchestrator_pb2.ListModelsRequest())
    return {m.model_id: m for m in reply.models}


async def wait_health(orchestrator: Orchestrator, model_id: str, health: int, timeout_s: float = 10) -> None:
    async def reached() -> bool:
        model = (await listed(orchestrator)).get(model_id)
        return model is not None and model.health == health

    await eventually(reached, timeout_s=timeout_s)


async def wait_in_flight(orchestrator: Orchestrator, model_id: str, count: int) -> None:
    async def reached() -> bool:
        model = (await listed(orchestrator)).get(model_id)
        return model is not None and model.in_flight >= count

    await eventually(reached, timeout_s=10)


async def ask(orchestrator: Orchestrator, model_id: str = "", max_tokens: int = 4) -> orchestrator_pb2.GenerateResponse:
    request = orchestrator_pb2.GenerateRequest(
        request_id=f"route-{uuid.uuid4().hex}",
        prompt="hello",
        model_id=model_id,
        sampling=types_pb2.SamplingParams(max_tokens=max_tokens),
    )
    reply: orchestrator_pb2.GenerateResponse = await orchestrator.stub.Generate(request, timeout=120)
    return reply


async def test_selection_follows_the_seed_order(orchestrator: Orchestrator, start_replica: StartReplica) -> None:
    first = await start_replica("m-default", default_flag=True, priority=10)
    second = await start_replica("m-priority", priority=50)
    third = await start_replica("m-plain")

    reply = await ask(orchestrator, model_id="m-plain")
    assert (reply.provenance.model_id, reply.provenance.selection_reason) == ("m-plain", "user-specified")

    await third.set_serving(False)
    await wait_health(orchestrator, "m-plain", types_pb2.HEALTH_STATE_NOT_SERVING, timeout_s=2)
    reply = await ask(orchestrator, model_id="m-plain")
    assert reply.provenance.model_id == "m-default"
    assert reply.provenance.selection_reason == "user-specified m-plain unhealthy; default"

    reply = await ask(orchestrator)
    assert (reply.provenance.model_id, reply.provenance.selection_reason) == ("m-default", "default")

    await first.set_serving(False)
    await wait_health(orchestrator, "m-default", types_pb2.HEALTH_STATE_NOT_SERVING, timeout_s=2)
    reply = await ask(orchestrator)
    assert (reply.provenance.model_id, reply.provenance.selection_reason) == ("m-priority", "priority")

    await second.set_serving(False)
    await third.set_serving(True)
    await wait_health(orchestrator, "m-plain", types_pb2.HEALTH_STATE_SERVING, timeout_s=2)
    await wait_health(orchestrator, "m-priority", types_pb2.HEALTH_STATE_NOT_SERVING, timeout_s=2)
    reply = await ask(orchestrator)
    assert (reply.provenance.model_id, reply.provenance.selection_reason) == ("m-plain", "first-available")


async def test_health_changes_reach_the_registry_within_two_seconds(
    orchestrator: Orchestrator, start_replica: StartReplica
) -> None:
    replica = await start_replica("m-flappy")
    started = time.monotonic()
    await replica.set_serving(False)
    await wait_health(orchestrator, "m-flappy", types_pb2.HEALTH_STATE_NOT_SERVING, timeout_s=2)
    await replica.set_serving(True)
    await wait_health(orchestrator, "m-flappy", types_pb2.HEALTH_STATE_SERVING, timeout_s=2)
    assert time.monotonic() - started < 4


async def test_capacity_skips_full_model_and_queues_when_all_are_full(
    orchestrator: Orchestrator, start_replica: StartReplica
) -> None:
    slow = {"max_concurrency": 1, "fake_token_ms": 100}
    await start_replica("m-a", default_flag=True, priority=10, **slow)
    await start_replica("m-b", priority=5, **slow)

    first = asyncio.ensure_future(ask(orchestrator, max_tokens=20))
    await wait_in_flight(orchestrator, "m-a", 1)
    second = asyncio.ensure_future(ask(orchestrator, max_tokens=20))
    await wait_in_flight(orchestrator, "m-b", 1)
    third = await ask(orchestrator, max_tokens=2)

    assert (await first).provenance.model_id == "m-a"
    assert (await second).provenance.model_id == "m-b"
    assert third.provenance.model_id == "m-a"
    assert "queued" in third.provenance.selection_reason
    assert third.provenance.timings.queue_wait_ms > 100, "it waited durably on the full model's queue"


async def test_model_killed_mid_generation_falls_back_to_another(
    orchestrator: Orchestrator,
    start_replica: StartReplica,
    temporal_client: Client,
    temporal_address: str,
    tmp_path: Path,
) -> None:
    doomed = await start_doomed_default(orchestrator, start_replica, temporal_address, tmp_path, "m")

    call = asyncio.ensure_future(ask(orchestrator, max_tokens=30))
    await wait_in_flight(orchestrator, "m-doomed", 1)
    doomed.kill()
    reply = await call

    assert reply.provenance.model_id == "m-backup"
    assert [f.model_id for f in reply.provenance.fallbacks] == ["m-doomed"]
    history = await temporal_client.get_workflow_handle(reply.provenance.workflow_id).fetch_history()
    record_history(history, "inference_fallback")
    queues = [
        e.activity_task_scheduled_event_attributes.task_queue.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert queues == ["llm.m-doomed", "llm.m-backup"]


async def test_nothing_can_serve_fails_cleanly_then_recovers(
    orchestrator: Orchestrator, start_replica: StartReplica
) -> None:
    replica = await start_replica("m-only")
    await replica.set_serving(False)
    await wait_health(orchestrator, "m-only", types_pb2.HEALTH_STATE_NOT_SERVING, timeout_s=2)

    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await ask(orchestrator)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "m-only: unhealthy" in (error.value.details() or "")
    assert time.monotonic() - started < 10

    await replica.set_serving(True)
    await wait_health(orchestrator, "m-only", types_pb2.HEALTH_STATE_SERVING, timeout_s=2)
    assert (await ask(orchestrator)).provenance.model_id == "m-only"


async def test_draining_replica_deregisters(orchestrator: Orchestrator, start_replica: StartReplica) -> None:
    replica = await start_replica("m-drain")
    await replica.drain()

    async def gone() -> bool:
        return "m-drain" not in await listed(orchestrator)

    await eventually(gone, timeout_s=5)


def metadata(model_id: str = "", **overrides: Any) -> metadata_pb2.ModelMetadata:
    values: dict[str, Any] = {
        "model_id": model_id,
        "model_type": types_pb2.MODEL_TYPE_LLM,
        "max_concurrency": 1,
        "context_limit": 2048,
        "endpoint": "localhost:1",
        "task_queue": f"llm.{model_id}",
    }
    values.update(overrides)
    return metadata_pb2.ModelMetadata(**values)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"model_id": ""}, "metadata.model_id"),
        ({"max_concurrency": 0}, "metadata.max_concurrency"),
        ({"context_limit": 0}, "metadata.context_limit"),
        ({"model_type": types_pb2.MODEL_TYPE_UNSPECIFIED}, "metadata.model_type"),
    ],
)
async def test_invalid_metadata_is_rejected(orchestrator: Orchestrator, overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await orchestrator.registry.Register(
            registry_pb2.RegisterRequest(metadata=metadata(**{"model_id": "bad", **overrides}))
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (error.value.details() or "")


async def test_second_default_wins_and_registry_survives_restart(
    orchestrator: Orchestrator, temporal_client: Client
) -> None:
    await orchestrator.registry.Register(registry_pb2.RegisterRequest(metadata=metadata("old", default_flag=True)))
    await orchestrator.registry.Register(
        registry_pb2.RegisterRequest(metadata=metadata("new", default_flag=True, endpoint="localhost:2"))
    )
    models = await listed(orchestrator)
    assert (models["old"].is_default, models["new"].is_default) == (False, True)

    restarted = await start_orchestrator(
        temporal_client, orchestrator.settings.model_copy(update={"port": 0}), with_worker=False
    )
    try:
        models = await listed(restarted)
        assert set(models) == {"old", "new"}
        assert models["new"].is_default and not models["old"].is_default
    finally:
        await stop_orchestrator(restarted)


async def test_metrics_cover_workflows_models_queues_and_errors(
    orchestrator: Orchestrator, start_replica: StartReplica
) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    await start_replica("m-metered")
    before = sample("llmorch_workflow_duration_seconds_count", workflow="InferenceWorkflow", outcome="OK")
    await ask(orchestrator)
    with pytest.raises(grpc.aio.AioRpcError):
        await orchestrator.stub.Generate(orchestrator_pb2.GenerateRequest(prompt=""))

    assert sample("llmorch_workflow_duration_seconds_count", workflow="InferenceWorkflow", outcome="OK") == before + 1
    assert sample("llmorch_model_generation_seconds_count", model_id="m-metered") >= 1
    assert sample("llmorch_model_time_to_first_token_seconds_count", model_id="m-metered") >= 1
    assert sample("llmorch_model_in_flight", model_id="m-metered") == 0
    assert sample("llmorch_rpc_requests_total", method="OrchestratorServicer.Generate", code="INVALID_ARGUMENT") >= 1
    assert REGISTRY.get_sample_value("llmorch_task_queue_backlog", {"task_queue": "llm.m-metered"}) is not None


async def test_a_streamed_request_is_timed_from_its_arrival(
    orchestrator: Orchestrator, start_replica: StartReplica
) -> None:
    """The duration of a stream covers the whole stream (it was measured from after its end, near zero)."""

    def observed_s() -> float:
        labels = {"workflow": "InferenceWorkflow", "outcome": "OK"}
        return REGISTRY.get_sample_value("llmorch_workflow_duration_seconds_sum", labels) or 0.0

    await start_replica("m-timed", fake_first_token_ms=100, fake_token_ms=50, default_flag=True)
    before = observed_s()
    request = orchestrator_pb2.GenerateRequest(prompt="Count.", sampling=types_pb2.SamplingParams(max_tokens=8))
    started = time.perf_counter()
    async for _ in orchestrator.stub.GenerateStream(orchestrator_pb2.GenerateStreamRequest(request=request)):
        pass
    elapsed = time.perf_counter() - started
    # 100 ms to the first token and 7 x 50 ms after it: the generation alone is 0.45 s of the stream.
    assert 0.45 <= observed_s() - before <= elapsed


async def test_queue_depth_gauge_is_published_without_anyone_listing_models(
    orchestrator: Orchestrator, temporal_address: str
) -> None:
    """It was refreshed only by ListModels; the API now reads every registered queue in the background."""
    replica = fake_replica("m-unlisted", temporal_address, orchestrator.internal_address)
    await replica.start()
    try:

        async def published() -> bool:
            return REGISTRY.get_sample_value("llmorch_task_queue_backlog", {"task_queue": "llm.m-unlisted"}) is not None

        await eventually(published, timeout_s=15, interval_s=0.2)
    finally:
        await replica.drain()


async def test_two_replicas_share_one_queue_and_double_capacity(
    orchestrator: Orchestrator, start_replica: StartReplica
) -> None:
    slow = {"max_concurrency": 1, "fake_token_ms": 100, "default_flag": True}
    await start_replica("m-twin", **slow)
    await start_replica("m-twin", **slow)

    async def two_replicas() -> bool:
        model = (await listed(orchestrator))["m-twin"]
        return model.serving_replicas == 2 and model.capacity == 2

    await eventually(two_replicas, timeout_s=5)
    calls = [asyncio.ensure_future(ask(orchestrator, max_tokens=20)) for _ in range(2)]
    await wait_in_flight(orchestrator, "m-twin", 2)  # both replicas generate at once, one each
    replies = await asyncio.gather(*calls)
    assert {r.provenance.model_id for r in replies} == {"m-twin"}
    assert all(r.provenance.timings.queue_wait_ms < 1000 for r in replies), "neither waited for the other"


async def test_stream_continues_on_the_fallback_model(
    orchestrator: Orchestrator, start_replica: StartReplica, temporal_address: str, tmp_path: Path
) -> None:
    doomed = await start_doomed_default(orchestrator, start_replica, temporal_address, tmp_path, "s")
    request = orchestrator_pb2.GenerateRequest(prompt="hello", sampling=types_pb2.SamplingParams(max_tokens=40))
    events: list[orchestrator_pb2.GenerateStreamResponse] = []
    async for event in orchestrator.stub.GenerateStream(orchestrator_pb2.GenerateStreamRequest(request=request)):
        events.append(event)
        if event.WhichOneof("event") == "delta" and doomed.process and doomed.process.poll() is None:
            doomed.kill()  # the first model dies after its first streamed text

    kinds = [e.WhichOneof("event") for e in events]
    selected = [e.selected for e in events if e.WhichOneof("event") == "selected"]
    assert [(s.model_id, s.attempt) for s in selected] == [("s-doomed", 1), ("s-backup", 2)]
    assert "reset" not in kinds, "the backup continues the text: nothing to discard"
    final = events[-1].completed
    before_fallback = "".join(e.delta for e in events[: kinds.index("selected", 1)])
    assert before_fallback and final.text.startswith(before_fallback)
    assert "".join(e.delta for e in events[:-1]) == final.text, "the deltas spell the answer"
    assert final.provenance.model_id == "s-backup"
    assert [f.model_id for f in final.provenance.fallbacks] == ["s-doomed"]
    assert [p.model_id for p in final.provenance.parts] == ["s-doomed", "s-backup"]
    assert final.provenance.parts[1].carried_chars == len(before_fallback)


async def test_a_crashed_replica_that_stays_silent_is_forgotten(
    temporal_client: Client, temporal_address: str, tmp_path: Path
) -> None:
    settings = orchestrator_settings(tmp_path, registry_stale_after_s=1.0)
    orchestrator = await start_orchestrator(temporal_client, settings, with_worker=False)
    crashed = model_process("m-crashed", temporal_address, orchestrator.api.internal_port, tmp_path)
    try:
        await crashed.start()
        await wait_health(orchestrator, "m-crashed", types_pb2.HEALTH_STATE_SERVING)
        crashed.kill()  # no drain, so no deregistration: only silence

        async def forgotten() -> bool:
            return "m-crashed" not in await listed(orchestrator)

        await eventually(forgotten, timeout_s=10)
    finally:
        await stop_orchestrator(orchestrator)


async def test_api_admission_limit_is_resource_exhausted_with_retry_info(
    temporal_client: Client, temporal_address: str, tmp_path: Path
) -> None:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    settings = orchestrator_settings(tmp_path, max_in_flight=1)
    orchestrator = await start_orchestrator(temporal_client, settings)
    replica = fake_replica("m-admit", temporal_address, orchestrator.internal_address, fake_token_ms=100)
    await replica.start()
    try:
        await wait_health(orchestrator, "m-admit", types_pb2.HEALTH_STATE_SERVING)
        first = asyncio.ensure_future(ask(orchestrator, max_tokens=20))
        await wait_in_flight(orchestrator, "m-admit", 1)
        with pytest.raises(grpc.aio.AioRpcError) as full:
            await ask(orchestrator)
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(full.value)
        assert status is not None
        assert any(detail.Unpack(error_details_pb2.RetryInfo()) for detail in status.details)
        assert (await first).provenance.model_id == "m-admit"
        assert (await ask(orchestrator)).provenance.model_id == "m-admit", "admitted again once the first is done"
    finally:
        await replica.drain()
        await stop_orchestrator(orchestrator)
