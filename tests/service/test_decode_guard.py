"""Bytes that are not the request message get INVALID_ARGUMENT on every kind of method, health and reflection
included, and no public method ever answers UNKNOWN or INTERNAL to random bytes; the server stays SERVING."""

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import IMPRECISE, Orchestrator, orchestrator_settings, raw_call, start_orchestrator, stop_orchestrator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.client import Client

# A field tag with wire type 7, which no protobuf message may contain: DecodeError for every request type.
UNDECODABLE = b"\x0f\x01"
UNARY = (
    "/llmorch.v1.OrchestratorService/Generate",
    "/llmorch.v1.OrchestratorService/GetRequest",
    "/llmorch.v1.OrchestratorService/ListModels",
    "/llmorch.v1.RetrievalService/Query",
    "/grpc.health.v1.Health/Check",
)
SERVER_STREAMING = ("/llmorch.v1.OrchestratorService/GenerateStream", "/grpc.health.v1.Health/Watch")
BIDI_STREAMING = ("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",)
# Methods whose well-formed random requests end quickly without models: each answers a precise status.
FUZZED = (
    "/llmorch.v1.OrchestratorService/GetRequest",
    "/llmorch.v1.OrchestratorService/ListModels",
    "/llmorch.v1.RetrievalService/Query",
    "/llmorch.v1.RetrievalService/GetIngestion",
    "/llmorch.v1.RetrievalService/DeleteCollection",
    "/grpc.health.v1.Health/Check",
)


@pytest.fixture(scope="module")
async def api(temporal_client: Client, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Orchestrator]:
    orchestrator = await start_orchestrator(temporal_client, orchestrator_settings(tmp_path_factory.mktemp("guard")))
    yield orchestrator
    await stop_orchestrator(orchestrator)


async def serving(channel: grpc.aio.Channel) -> bool:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@pytest.mark.parametrize("method", UNARY)
async def test_undecodable_unary_request_is_invalid_argument(api: Orchestrator, method: str) -> None:
    assert await raw_call(api.channel, method, UNDECODABLE) == grpc.StatusCode.INVALID_ARGUMENT
    assert await serving(api.channel)


@pytest.mark.parametrize("method", SERVER_STREAMING)
async def test_undecodable_streaming_request_is_invalid_argument(api: Orchestrator, method: str) -> None:
    assert await raw_call(api.channel, method, UNDECODABLE, server_streaming=True) == grpc.StatusCode.INVALID_ARGUMENT
    assert await serving(api.channel)


@pytest.mark.parametrize("method", BIDI_STREAMING)
async def test_undecodable_message_in_a_request_stream_is_invalid_argument(api: Orchestrator, method: str) -> None:
    call = api.channel.stream_stream(method)(iter([UNDECODABLE]), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        async for _ in call:
            pass
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await serving(api.channel)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(FUZZED), payload=st.binary(max_size=64))
async def test_random_bytes_never_get_an_imprecise_status(api: Orchestrator, method: str, payload: bytes) -> None:
    assert await raw_call(api.channel, method, payload) not in IMPRECISE
