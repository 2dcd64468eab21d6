"""ModelService on a real grpc.aio server: contract, health, errors, and that cancellation frees the context."""

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import eventually
from llmorch.internal.v1 import metadata_pb2, model_pb2, model_pb2_grpc
from llmorch.v1 import types_pb2

from llmorch_common.contracts import Sampling
from llmorch_common.grpc_edge import create_server, set_serving
from model_svc.engine import EnginePool, FakeEngine, GenerationRequest, Piece
from model_svc.server import SERVICE_NAME, ModelServicer, register


class RunningModel:
    def __init__(self, servicer: ModelServicer, channel: grpc.aio.Channel) -> None:
        self.servicer = servicer
        self.stub = model_pb2_grpc.ModelServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    async def in_flight(self) -> int:
        info = await self.stub.GetModelInfo(model_pb2.GetModelInfoRequest())
        return int(info.in_flight)


@pytest.fixture
async def model() -> AsyncIterator[RunningModel]:
    servicer = ModelServicer(metadata_pb2.ModelMetadata(model_id="svc-fake", context_limit=256))
    server, port, health = await create_server(lambda s: register(s, servicer), 0, "127.0.0.1")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        running = RunningModel(servicer, channel)
        # Loading: NOT_SERVING and UNAVAILABLE until the engines are in place.
        reply = await running.health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as loading:
            await running.stub.Generate(model_pb2.GenerateRequest(prompt="hi"))
        assert loading.value.code() == grpc.StatusCode.UNAVAILABLE
        servicer.pool = EnginePool(
            [FakeEngine("svc-fake", 256, first_token_ms=5, token_ms=50)], admission_timeout_s=0.3
        )
        await set_serving(health, [SERVICE_NAME], True)
        yield running
    await server.stop(0)


def request(max_tokens: int, prompt: str = "hello there") -> model_pb2.GenerateRequest:
    return model_pb2.GenerateRequest(prompt=prompt, sampling=types_pb2.SamplingParams(max_tokens=max_tokens))


async def test_generate_and_stream_agree(model: RunningModel) -> None:
    reply = await model.stub.Generate(request(3))
    assert reply.usage.completion_tokens == 3 and reply.finish_reason == types_pb2.FINISH_REASON_LENGTH
    chunks = [c async for c in model.stub.GenerateStream(model_pb2.GenerateStreamRequest(generation=request(3)))]
    assert "".join(c.delta for c in chunks[:-1]) == chunks[-1].final.text == reply.text


async def test_cancelled_stream_frees_the_context(model: RunningModel) -> None:
    stream = model.stub.GenerateStream(model_pb2.GenerateStreamRequest(generation=request(200)))
    async for _ in stream:
        break  # one delta arrived: the generation is running
    assert await model.in_flight() == 1
    stream.cancel()
    await eventually(lambda: _idle(model), timeout_s=2)
    assert (await model.stub.Generate(request(1))).usage.completion_tokens == 1


async def test_deadline_frees_the_context(model: RunningModel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await model.stub.Generate(request(200), timeout=0.3)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await eventually(lambda: _idle(model), timeout_s=2)


async def test_busy_context_is_resource_exhausted_with_retry_info(model: RunningModel) -> None:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    long_call = asyncio.ensure_future(model.stub.Generate(request(40)))
    await eventually(lambda: _busy(model), timeout_s=2)
    with pytest.raises(grpc.aio.AioRpcError) as full:
        await model.stub.Generate(request(1))
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(full.value)
    assert status is not None
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in status.details)
    await long_call


async def test_bad_input_and_context_overflow(model: RunningModel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await model.stub.Generate(request(0))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as long_prompt:
        await model.stub.Generate(request(8, prompt="word " * 300))
    assert long_prompt.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def _idle(model: RunningModel) -> bool:
    return await model.in_flight() == 0


async def _busy(model: RunningModel) -> bool:
    return await model.in_flight() == 1


async def test_stream_carries_token_ids_and_a_resume_continues_after_them(model: RunningModel) -> None:
    whole = [c async for c in model.stub.GenerateStream(model_pb2.GenerateStreamRequest(generation=request(4)))]
    ids = [token for chunk in whole[:-1] for token in chunk.token_ids]
    assert len(ids) == 4

    resumed_request = request(4)
    resumed_request.resume_token_ids.extend(ids[:2])
    resumed = await model.stub.Generate(resumed_request)
    first_two = "".join(c.delta for c in whole[:2])
    assert first_two + resumed.text == whole[-1].final.text, "the resumed text continues exactly"
    assert (resumed.resumed_tokens, resumed.usage.completion_tokens) == (2, 2)


@pytest.mark.parametrize(
    ("resume", "prefix", "field"),
    [
        ([0, 1, 2], "", "generation.resume_token_ids"),  # as many as max_tokens: nothing left to generate
        ([5], "", "generation.resume_token_ids"),  # not tokens this engine generated
        ([], "x" * 100_001, "generation.assistant_prefix"),
    ],
)
async def test_bad_resume_input_is_invalid_argument(
    model: RunningModel, resume: list[int], prefix: str, field: str
) -> None:
    bad = request(3)
    bad.resume_token_ids.extend(resume)
    bad.assistant_prefix = prefix
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await model.stub.Generate(bad)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (error.value.details() or "")


class SlowToStopEngine(FakeEngine):
    """Takes 300 ms to notice a cancellation, like a llama.cpp decode that must finish first."""

    def generate(
        self, request: GenerationRequest, on_delta: Callable[[Piece], None], cancelled: threading.Event
    ) -> Any:
        def slow(piece: Piece) -> None:
            on_delta(piece)
            if cancelled.is_set():
                time.sleep(0.3)

        return super().generate(request, slow, cancelled)


async def test_a_context_comes_back_even_if_its_caller_is_cancelled_while_it_stops() -> None:
    pool = EnginePool([SlowToStopEngine("slow-stop", 256, first_token_ms=1, token_ms=20)], admission_timeout_s=0.3)
    first = asyncio.Event()

    async def consume() -> None:
        generation = GenerationRequest((), "hello", Sampling(max_tokens=200))
        async with aclosing(pool.stream(generation)) as items:
            async for _ in items:
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()  # the pool starts stopping the engine...
    await asyncio.sleep(0.05)
    task.cancel()  # ...and its caller is cancelled again while it waits for the thread
    with contextlib.suppress(asyncio.CancelledError):
        await task

    async def freed() -> bool:
        return pool.in_flight == 0

    await eventually(freed, timeout_s=3)
