"""Durability: a request survives its workflow worker or its model process being killed mid-generation."""

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import (
    Orchestrator,
    eventually,
    model_process,
    orchestrator_settings,
    start_orchestrator,
    stop_orchestrator,
    worker_process,
    workflow_id_of,
)
from llmorch.internal.v1 import model_pb2, model_pb2_grpc
from llmorch.v1 import orchestrator_pb2, types_pb2
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from orchestrator_svc.registry.queue_stats import QueueStats

pytestmark = pytest.mark.slow
SLOW_MODEL = "slow-fake"


@pytest.fixture
async def orchestrator_without_worker(temporal_client: Client, tmp_path: Path) -> AsyncIterator[Orchestrator]:
    orchestrator = await start_orchestrator(temporal_client, orchestrator_settings(tmp_path), with_worker=False)
    yield orchestrator
    await stop_orchestrator(orchestrator)


async def wait_generation_running(client: Client, workflow_id: str) -> None:
    async def running() -> bool:
        description = await client.get_workflow_handle(workflow_id).describe()
        return any(p.activity_type.name == "generate" for p in description.raw_description.pending_activities)

    await eventually(running, timeout_s=20)


async def wait_serving(orchestrator: Orchestrator, model_id: str) -> None:
    async def serving() -> bool:
        listing = await orchestrator.stub.ListModels(orchestrator_pb2.ListModelsRequest())
        return any(m.model_id == model_id and m.health == types_pb2.HEALTH_STATE_SERVING for m in listing.models)

    await eventually(serving, timeout_s=20)


def slow_request(request_id: str) -> orchestrator_pb2.GenerateRequest:
    # 30 tokens at 100 ms: a 3-second generation leaves time to kill things in the middle of it.
    return orchestrator_pb2.GenerateRequest(
        request_id=request_id, prompt="tell me a story", sampling=types_pb2.SamplingParams(max_tokens=30)
    )


async def test_workflow_worker_killed_and_restarted_mid_request(
    orchestrator_without_worker: Orchestrator, temporal_client: Client, temporal_address: str, tmp_path: Path
) -> None:
    orchestrator = orchestrator_without_worker
    model = await model_process(
        SLOW_MODEL, temporal_address, orchestrator.api.internal_port, tmp_path, fake_token_ms=100
    ).start()
    worker = await worker_process(orchestrator.settings, temporal_address, tmp_path).start()
    try:
        await wait_serving(orchestrator, SLOW_MODEL)
        request_id = f"chaos-worker-{uuid.uuid4().hex}"
        call = asyncio.ensure_future(orchestrator.stub.Generate(slow_request(request_id), timeout=120))
        await wait_generation_running(temporal_client, workflow_id_of(request_id))

        worker.kill()
        worker = await worker_process(orchestrator.settings, temporal_address, tmp_path).start()
        reply = await call

        assert reply.provenance.model_id == SLOW_MODEL
        assert reply.provenance.usage.completion_tokens == 30
        history = await temporal_client.get_workflow_handle(workflow_id_of(request_id)).fetch_history()
        kinds = [e.event_type for e in history.events]
        assert kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == 1, "the generation ran once, not twice"
        assert kinds[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    finally:
        await worker.terminate()
        await model.terminate()


async def test_model_process_killed_and_restarted_mid_generation(
    temporal_client: Client, temporal_address: str, tmp_path: Path
) -> None:
    orchestrator = await start_orchestrator(temporal_client, orchestrator_settings(tmp_path))
    model = model_process(SLOW_MODEL, temporal_address, orchestrator.api.internal_port, tmp_path, fake_token_ms=100)
    await model.start()
    try:
        await wait_serving(orchestrator, SLOW_MODEL)
        request_id = f"chaos-model-{uuid.uuid4().hex}"
        call = asyncio.ensure_future(orchestrator.stub.Generate(slow_request(request_id), timeout=120))
        await wait_generation_running(temporal_client, workflow_id_of(request_id))

        model.kill()
        await model.start()  # the same replica comes back on the same port and queue
        reply = await call

        assert reply.provenance.model_id == SLOW_MODEL
        history = await temporal_client.get_workflow_handle(workflow_id_of(request_id)).fetch_history()
        started = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED]
        assert started[-1].activity_task_started_event_attributes.attempt == 2, "Temporal retried the generation"
    finally:
        await model.terminate()
        await stop_orchestrator(orchestrator)


async def test_sigterm_drains_in_flight_work_and_ends_not_serving(
    orchestrator_without_worker: Orchestrator, temporal_address: str, tmp_path: Path
) -> None:
    orchestrator = orchestrator_without_worker
    model = await model_process(
        SLOW_MODEL, temporal_address, orchestrator.api.internal_port, tmp_path, fake_token_ms=50
    ).start()
    await wait_serving(orchestrator, SLOW_MODEL)
    async with grpc.aio.insecure_channel(f"localhost:{model.port}") as channel:
        stub = model_pb2_grpc.ModelServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        in_flight = asyncio.ensure_future(
            stub.Generate(
                model_pb2.GenerateRequest(prompt="x", sampling=types_pb2.SamplingParams(max_tokens=40)),
                timeout=30,
            )
        )

        async def generating() -> bool:
            return bool((await stub.GetModelInfo(model_pb2.GetModelInfoRequest())).in_flight == 1)

        await eventually(generating, timeout_s=5)
        assert model.process is not None
        model.process.send_signal(signal.SIGTERM)
        model.sigterm_sent = True

        async def not_serving() -> bool:
            reply = await health.Check(health_pb2.HealthCheckRequest())
            return bool(reply.status == health_pb2.HealthCheckResponse.NOT_SERVING)

        await eventually(not_serving, timeout_s=5)
        reply = await in_flight
        assert reply.usage.completion_tokens == 40, "the in-flight generation finished during the drain"

    assert await model.terminate(timeout_s=30) == 0

    async def deregistered() -> bool:
        listing = await orchestrator.stub.ListModels(orchestrator_pb2.ListModelsRequest())
        return all(m.model_id != SLOW_MODEL for m in listing.models)

    await eventually(deregistered, timeout_s=5)


async def test_default_model_is_chosen_again_after_a_killed_generation_fell_back(
    temporal_client: Client, temporal_address: str, tmp_path: Path
) -> None:
    """The phantom backlog: a default model killed mid-generation, its retry never started, the request fell back
    to another model, and Temporal went on counting the abandoned retry on the default's queue. Once the default
    is back and idle, the next request must go to it: only in-flight counts and a backlog that really waits (the
    queue moves, and is behind) may say "full". Before the fix, this test chose the other model every time."""
    default_id, other_id = f"dflt-{uuid.uuid4().hex[:6]}", f"prio-{uuid.uuid4().hex[:6]}"
    # One attempt per model and a short saturation bound: the killed model's generation falls back quickly.
    settings = orchestrator_settings(tmp_path, generate_attempts=2, heartbeat_timeout_s=2.0, saturation_timeout_s=3.0)
    orchestrator = await start_orchestrator(temporal_client, settings)
    port = orchestrator.api.internal_port
    default = model_process(default_id, temporal_address, port, tmp_path, fake_token_ms=100, default_flag=True)
    other = model_process(other_id, temporal_address, port, tmp_path, priority=5, default_flag=False)
    await default.start()
    await other.start()
    try:
        await wait_serving(orchestrator, default_id)
        await wait_serving(orchestrator, other_id)
        request_id = f"phantom-{uuid.uuid4().hex}"
        call = asyncio.ensure_future(orchestrator.stub.Generate(slow_request(request_id), timeout=120))
        await wait_generation_running(temporal_client, workflow_id_of(request_id))
        default.kill()
        reply = await call
        assert reply.provenance.model_id == other_id
        assert [f.model_id for f in reply.provenance.fallbacks] == [default_id]

        await default.start()  # the default comes back, idle
        await wait_serving(orchestrator, default_id)
        stats = await QueueStats(temporal_client).load(f"llm.{default_id}")
        # Seen here: QueueLoad(backlog=2, age_s=5.25, add_rate=0.64, dispatch_rate=0.0), the abandoned retries.
        print(f"llm.{default_id} after the fallback: {stats}")
        for _ in range(3):
            next_reply = await orchestrator.stub.Generate(
                orchestrator_pb2.GenerateRequest(prompt="hi", sampling=types_pb2.SamplingParams(max_tokens=3)),
                timeout=60,
            )
            assert (next_reply.provenance.model_id, next_reply.provenance.selection_reason) == (default_id, "default")
    finally:
        await default.terminate()
        await other.terminate()
        await stop_orchestrator(orchestrator)
