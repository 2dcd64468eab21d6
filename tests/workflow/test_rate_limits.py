"""Per-key rate limits across two API replicas that share one PostgreSQL: the same numbers whichever replica serves,
a precise refusal, and no workflow for a refused request."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from helpers import (
    Orchestrator,
    eventually,
    fake_replica,
    orchestrator_settings,
    start_orchestrator,
    stop_orchestrator,
)
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from llmorch_common.grpc_edge import make_channel
from orchestrator_svc.identity.keys import KeyPolicy
from orchestrator_svc.inference.service import workflow_id

pytestmark = pytest.mark.slow
MODEL = "m-limited"
TENANT = "limited"


@pytest.fixture
async def replicas(
    temporal_client: Client, temporal_address: str, tmp_path: Path, postgres_url: str
) -> AsyncIterator[tuple[Orchestrator, Orchestrator]]:
    """Two API replicas on one task queue and one registry database, and a slow model (200 ms a token)."""
    first_settings = orchestrator_settings(tmp_path / "one", database_url=postgres_url)
    first = await start_orchestrator(temporal_client, first_settings)
    second_settings = orchestrator_settings(
        tmp_path / "two", database_url=postgres_url, task_queue=first.settings.task_queue
    )
    # One SDK client may run one worker per queue: the second replica's runs go to the first one's worker.
    second = await start_orchestrator(temporal_client, second_settings, with_worker=False)
    replica = fake_replica(
        MODEL, temporal_address, first.internal_address, default_flag=True, max_concurrency=4, fake_token_ms=200
    )
    await replica.start()

    async def both_see_it() -> bool:
        for api in (first, second):
            listing = await api.stub.ListModels(orchestrator_pb2.ListModelsRequest())
            if not any(m.model_id == MODEL and m.health == types_pb2.HEALTH_STATE_SERVING for m in listing.models):
                return False
        return True

    await eventually(both_see_it, timeout_s=30)
    yield first, second
    await replica.drain()
    await stop_orchestrator(second)
    await stop_orchestrator(first)


def request(max_tokens: int = 2) -> orchestrator_pb2.GenerateRequest:
    return orchestrator_pb2.GenerateRequest(
        request_id=f"rl-{uuid.uuid4().hex[:10]}", prompt="Hi", sampling=types_pb2.SamplingParams(max_tokens=max_tokens)
    )


async def stubs(
    replicas: tuple[Orchestrator, Orchestrator], policy: KeyPolicy
) -> tuple[list[grpc.aio.Channel], list[orchestrator_pb2_grpc.OrchestratorServiceStub]]:
    """One key, used through both replicas."""
    key = await replicas[0].key_for(TENANT, policy=policy)
    channels = [make_channel(api.address, token=key) for api in replicas]
    return channels, [orchestrator_pb2_grpc.OrchestratorServiceStub(channel) for channel in channels]


async def assert_refused(
    temporal_client: Client, stub: orchestrator_pb2_grpc.OrchestratorServiceStub, limit: str
) -> None:
    """RESOURCE_EXHAUSTED naming `limit` in a QuotaFailure, with RetryInfo, and no workflow for the request."""
    refused = request()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Generate(refused)
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    status = status_pb2.Status.FromString(dict(error.trailing_metadata() or ())["grpc-status-details-bin"])
    kinds = {detail.type_url.rsplit("/", 1)[1]: detail for detail in status.details}
    quota, retry = error_details_pb2.QuotaFailure(), error_details_pb2.RetryInfo()
    kinds["google.rpc.QuotaFailure"].Unpack(quota)
    kinds["google.rpc.RetryInfo"].Unpack(retry)
    assert limit in quota.violations[0].description and quota.violations[0].subject.startswith("api_key:")
    assert retry.retry_delay.ToTimedelta().total_seconds() > 0
    with pytest.raises(RPCError) as missing:
        await temporal_client.get_workflow_handle(workflow_id(TENANT, refused.request_id)).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND, "a refused request started no workflow"


async def test_requests_per_minute_hold_across_replicas(
    replicas: tuple[Orchestrator, Orchestrator], temporal_client: Client
) -> None:
    channels, (one, two) = await stubs(replicas, KeyPolicy(requests_per_minute=3))
    for stub in (one, two, one):
        await stub.Generate(request())
    await assert_refused(temporal_client, two, "requests per minute")
    for channel in channels:
        await channel.close()


async def test_concurrency_holds_across_replicas_and_frees_when_a_request_ends(
    replicas: tuple[Orchestrator, Orchestrator], temporal_client: Client
) -> None:
    channels, (one, two) = await stubs(replicas, KeyPolicy(max_concurrent=1))
    slow = asyncio.ensure_future(one.Generate(request(max_tokens=10)))  # 2 s at 200 ms a token
    await eventually(lambda: _in_flight(temporal_client), timeout_s=10)
    await assert_refused(temporal_client, two, "concurrent requests")
    await slow
    await two.Generate(request())  # the lease went with the request
    for channel in channels:
        await channel.close()


async def test_tokens_per_minute_charge_max_tokens_up_front(
    replicas: tuple[Orchestrator, Orchestrator], temporal_client: Client
) -> None:
    # "Hi" is charged 1 token plus max_tokens up front: the slow request holds 11, the next one needs 3 more.
    channels, (one, two) = await stubs(replicas, KeyPolicy(tokens_per_minute=13))
    slow = asyncio.ensure_future(one.Generate(request(max_tokens=10)))
    await eventually(lambda: _in_flight(temporal_client), timeout_s=10)
    await assert_refused(temporal_client, two, "tokens per minute")
    await slow
    for channel in channels:
        await channel.close()


async def _in_flight(client: Client) -> bool:
    """A request of the tenant is running (admitted, its workflow started)."""
    async for _ in client.list_workflows(
        f"WorkflowId STARTS_WITH 'inference-{TENANT}.' AND ExecutionStatus = 'Running'"
    ):
        return True
    return False
