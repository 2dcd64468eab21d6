"""Durable priority and fairness on a saturated model: one fake-engine replica, max_concurrency 1, 100 ms a request.

The tests assert completion order, never timings. Temporal's matching service does the ordering (priority keys,
fairness keys and weights), configured by the stack definition; the control run uses a dev server without it.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
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
    start_orchestrator,
    stop_orchestrator,
)
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError

from llmorch_common.payload_codec import connect
from model_svc.replica import ModelReplica
from orchestrator_svc.identity.keys import KeyPolicy
from orchestrator_svc.inference.service import workflow_id
from orchestrator_svc.registry.queue_stats import QueueStats
from tools.stack import Child, Stack, StackConfig

pytestmark = pytest.mark.slow
MODEL = "m-saturated"


@dataclass
class Saturated:
    """An orchestrator in front of one model that serves one request at a time, and the order requests finish in."""

    orchestrator: Orchestrator
    client: Client
    finished: list[str] = field(default_factory=list)  # label:request_id, in completion order
    calls: list["asyncio.Task[None]"] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    async def stub(self, tenant: str, policy: KeyPolicy) -> orchestrator_pb2_grpc.OrchestratorServiceStub:
        channel = await self.orchestrator.channel_for(tenant, policy=policy)
        self.channels.append(channel)
        return orchestrator_pb2_grpc.OrchestratorServiceStub(channel)

    def send(
        self, stub: orchestrator_pb2_grpc.OrchestratorServiceStub, label: str, count: int, batch: bool = False
    ) -> list[str]:
        sent = []
        for index in range(count):
            request_id = f"{label}-{index}-{uuid.uuid4().hex[:6]}"
            request = orchestrator_pb2.GenerateRequest(
                request_id=request_id,
                prompt="Go.",
                sampling=types_pb2.SamplingParams(max_tokens=1),
                priority_class=orchestrator_pb2.PRIORITY_CLASS_BATCH
                if batch
                else orchestrator_pb2.PRIORITY_CLASS_UNSPECIFIED,
            )
            self.calls.append(asyncio.create_task(self._call(stub, request, f"{label}:{request_id}")))
            sent.append(f"{label}:{request_id}")
        return sent

    async def _call(
        self, stub: orchestrator_pb2_grpc.OrchestratorServiceStub, request: orchestrator_pb2.GenerateRequest, name: str
    ) -> None:
        await stub.Generate(request, timeout=600)
        self.finished.append(name)

    async def backlog_of_at_least(self, count: int) -> None:
        stats = QueueStats(self.client)
        await eventually(lambda: _at_least(stats, count), timeout_s=60, interval_s=0.3)

    async def all_queued(self) -> None:
        """Every request sent is queued, running or finished: the model's queue holds all that is left."""
        stats = QueueStats(self.client)

        async def queued() -> bool:
            waiting = (await stats.load(f"llm.{MODEL}")).backlog
            return waiting + len(self.finished) + 1 >= len(self.calls)

        await eventually(queued, timeout_s=90, interval_s=0.3)

    async def positions_when_finished(self, sent: list[str], after: int) -> list[int]:
        """Wait until every one of `sent` has finished; where each finished, counted after the first `after`."""
        await eventually(lambda: _true(all(name in self.finished for name in sent)), timeout_s=120, interval_s=0.05)
        return positions(self.finished, sent, after)

    async def wait_finished(self, count: int) -> None:
        await eventually(lambda: _true(len(self.finished) >= count), timeout_s=120, interval_s=0.05)

    async def abandon(self, tenants: dict[str, str]) -> None:
        """Stop the calls and terminate the runs still queued: the scenario has seen what it needed."""
        for task in self.calls:
            task.cancel()
        await asyncio.gather(*self.calls, return_exceptions=True)
        for label, tenant in tenants.items():
            async for execution in self.client.list_workflows(f"WorkflowId STARTS_WITH 'inference-{tenant}.{label}-'"):
                if execution.status == WorkflowExecutionStatus.RUNNING:
                    with contextlib.suppress(RPCError):  # it may have finished since it was listed
                        await self.client.get_workflow_handle(execution.id).terminate("scenario over")
        for channel in self.channels:
            await channel.close()


async def _at_least(stats: QueueStats, count: int) -> bool:
    return (await stats.load(f"llm.{MODEL}")).backlog >= count


async def _true(value: bool) -> bool:
    return value


async def saturated(client: Client, temporal_address: str, tmp: Path) -> tuple[Saturated, ModelReplica]:
    settings = orchestrator_settings(tmp, saturation_timeout_s=900.0, max_in_flight=5000)
    orchestrator = await start_orchestrator(client, settings)
    replica = fake_replica(
        MODEL,
        temporal_address,
        orchestrator.internal_address,
        default_flag=True,
        max_concurrency=1,
        fake_first_token_ms=100,
        fake_token_ms=1,
    )
    await replica.start()
    return Saturated(orchestrator, client), replica


@pytest.fixture
async def fair(temporal_client: Client, temporal_address: str, tmp_path: Path) -> AsyncIterator[Saturated]:
    scenario, replica = await saturated(temporal_client, temporal_address, tmp_path)
    yield scenario
    await replica.drain()
    await stop_orchestrator(scenario.orchestrator)


@pytest.fixture(scope="module")
async def fifo_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """The control: a dev server as the stack runs it, but without fairness (one FIFO per queue)."""
    stack = Stack(StackConfig(home=tmp_path_factory.mktemp("fifo"), temporal_fairness=False))
    server = await stack.start_temporal()
    yield f"127.0.0.1:{server.port}"
    await stack.stop()


def positions(finished: list[str], sent: list[str], after: int) -> list[int]:
    """Where each of `sent` finished, counted in completions after the first `after`."""
    order = {name: index for index, name in enumerate(finished)}
    return sorted(order[name] - after + 1 for name in sent if name in order)


async def test_a_late_tenant_is_served_within_the_backlog_of_another(fair: Saturated) -> None:
    a = await fair.stub("tenant-a", KeyPolicy())
    b = await fair.stub("tenant-b", KeyPolicy())
    fair.send(a, "a", 100)
    await fair.backlog_of_at_least(60)
    before_b = len(fair.finished)
    finished_at = await fair.positions_when_finished(fair.send(b, "b", 10), before_b)
    await fair.abandon({"a": "tenant-a", "b": "tenant-b"})
    assert len(finished_at) == 10 and max(finished_at) <= 25, finished_at


async def test_without_fairness_the_late_tenant_waits_behind_the_backlog(
    fifo_server: str, tmp_path: Path, temporal_address: str
) -> None:
    client = await connect(fifo_server, "default")
    scenario, replica = await saturated(client, fifo_server, tmp_path)
    try:
        a = await scenario.stub("tenant-a", KeyPolicy())
        b = await scenario.stub("tenant-b", KeyPolicy())
        scenario.send(a, "a", 100)
        await scenario.backlog_of_at_least(60)
        before_b = len(scenario.finished)
        sent_b = scenario.send(b, "b", 10)
        await scenario.wait_finished(before_b + 30)
        assert positions(scenario.finished[: before_b + 30], sent_b, before_b) == [], "B jumped A's backlog"
        await scenario.abandon({"a": "tenant-a", "b": "tenant-b"})
    finally:
        await replica.drain()
        await stop_orchestrator(scenario.orchestrator)


async def test_interactive_requests_overtake_a_batch_backlog(fair: Saturated) -> None:
    batch_key = await fair.stub("tenant-a", KeyPolicy())
    fair.send(batch_key, "batch", 100, batch=True)
    await fair.backlog_of_at_least(60)
    before = len(fair.finished)
    finished_at = await fair.positions_when_finished(fair.send(batch_key, "live", 10), before)
    await fair.abandon({"batch": "tenant-a", "live": "tenant-a"})
    assert len(finished_at) == 10 and max(finished_at) <= 15, finished_at


async def test_weights_share_a_saturated_queue_three_to_one(fair: Saturated) -> None:
    heavy = await fair.stub("tenant-heavy", KeyPolicy(fairness_weight=3.0))
    light = await fair.stub("tenant-light", KeyPolicy(fairness_weight=1.0))
    # Enough for 80 completions at 3:1 (60 and 20) with both tenants still queued at the end of the window.
    fair.send(heavy, "h", 90)
    fair.send(light, "l", 40)
    await fair.all_queued()
    start = len(fair.finished)
    await fair.wait_finished(start + 80)
    window = fair.finished[start : start + 80]
    await fair.abandon({"h": "tenant-heavy", "l": "tenant-light"})
    heavy_count = sum(name.startswith("h:") for name in window)
    light_count = len(window) - heavy_count
    assert light_count and 3 * 0.85 <= heavy_count / light_count <= 3 * 1.15, (heavy_count, light_count)


async def test_the_class_and_wait_are_recorded(fair: Saturated) -> None:
    stub = await fair.stub("tenant-a", KeyPolicy())
    reply = await stub.Generate(
        orchestrator_pb2.GenerateRequest(
            prompt="Go.",
            sampling=types_pb2.SamplingParams(max_tokens=1),
            priority_class=orchestrator_pb2.PRIORITY_CLASS_BATCH,
        )
    )
    assert reply.provenance.priority_class == "batch"
    assert reply.provenance.timings.queue_wait_ms >= 0
    description = await fair.client.get_workflow_handle(reply.provenance.workflow_id).describe()
    assert description.raw_description.workflow_execution_info.priority.priority_key == 4
    assert description.raw_description.workflow_execution_info.priority.fairness_key == "tenant-a"
    try:
        await stub.Generate(orchestrator_pb2.GenerateRequest(prompt="Go.", priority_class=7))  # type: ignore[arg-type]
        raise AssertionError("an unknown class was accepted")
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "priority_class" in str(error.details())
    assert workflow_id("tenant-a", "x").startswith("inference-tenant-a.")


async def test_a_model_killed_mid_backlog_loses_no_request(
    temporal_client: Client, temporal_address: str, tmp_path: Path
) -> None:
    """Both tenants' backlogs live in Temporal's queue, not in a process: the replica dies and its successor serves
    every request, the one it was generating included (retried after its heartbeat timeout)."""
    settings = orchestrator_settings(tmp_path, saturation_timeout_s=900.0, heartbeat_timeout_s=3.0)
    orchestrator = await start_orchestrator(temporal_client, settings)
    model_settings: dict[str, Any] = {"default_flag": True, "max_concurrency": 1, "fake_first_token_ms": 100}

    def a_replica() -> Child:
        return model_process(MODEL, temporal_address, orchestrator.api.internal_port, tmp_path, **model_settings)

    model = await a_replica().start()
    scenario = Saturated(orchestrator, temporal_client)
    try:
        a = await scenario.stub("tenant-a", KeyPolicy())
        b = await scenario.stub("tenant-b", KeyPolicy())
        sent = scenario.send(a, "a", 30) + scenario.send(b, "b", 10)
        await scenario.wait_finished(5)
        model.kill()
        model = await a_replica().start()
        await eventually(lambda: _true(all(task.done() for task in scenario.calls)), timeout_s=180, interval_s=0.2)
        assert [task.exception() for task in scenario.calls if task.exception()] == []
        assert sorted(scenario.finished) == sorted(sent)
    finally:
        model.stop()
        for channel in scenario.channels:
            await channel.close()
        await stop_orchestrator(orchestrator)
