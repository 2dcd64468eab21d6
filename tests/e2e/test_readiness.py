"""Readiness follows Temporal: with the dev server gone the API's readiness turns NOT_SERVING while its liveness
stays SERVING, Envoy answers new requests with a prompt UNAVAILABLE, and all of it recovers when Temporal returns."""

import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2
from helpers import eventually, health_status
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

from llmorch_common.constants import LIVENESS_SERVICE, READINESS_SERVICE
from tools.stack import Stack, fake_stack

pytestmark = pytest.mark.slow
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
async def stack() -> AsyncIterator[Stack]:
    async with Stack(fake_stack(max_concurrency=2, first_token_ms=5.0, token_ms=1.0)) as started:
        yield started


async def generate(stack: Stack, timeout_s: float) -> orchestrator_pb2.GenerateResponse:
    request = orchestrator_pb2.GenerateRequest(prompt="Say hi.", sampling=types_pb2.SamplingParams(max_tokens=2))
    async with stack.channel() as channel:
        reply: orchestrator_pb2.GenerateResponse = await orchestrator_pb2_grpc.OrchestratorServiceStub(
            channel
        ).Generate(request, timeout=timeout_s)
    return reply


async def test_readiness_follows_temporal_and_liveness_does_not(stack: Stack) -> None:
    assert await health_status(stack.api_target, READINESS_SERVICE) == SERVING
    assert (await generate(stack, 30)).text

    temporal = stack.child("temporal")
    temporal.kill()
    lost = time.monotonic()

    async def not_ready() -> bool:
        return bool(await health_status(stack.api_target, READINESS_SERVICE) == NOT_SERVING)

    await eventually(not_ready, timeout_s=30, interval_s=0.2)
    print(f"readiness NOT_SERVING {time.monotonic() - lost:.1f} s after Temporal died")
    assert await health_status(stack.api_target, LIVENESS_SERVICE) == SERVING, "a Temporal outage restarts no API pod"

    async def envoy_refuses() -> bool:
        asked = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await generate(stack, 10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value.details()
        return time.monotonic() - asked < 1.0  # Envoy answers at once: the host left its load balancer

    await eventually(envoy_refuses, timeout_s=15, interval_s=0.5)

    await temporal.spawn().wait_ready()  # the same SQLite file: every workflow is still there

    async def ready_again() -> bool:
        return bool(await health_status(stack.api_target, READINESS_SERVICE) == SERVING)

    await eventually(ready_again, timeout_s=30, interval_s=0.2)

    async def answers_again() -> bool:
        return bool((await generate(stack, 20)).text)

    await eventually(answers_again, timeout_s=60, interval_s=1.0)
