"""Both real models behind the ModelService contract: a chat model (SmolLM2) and a base completion model (Gemma 3)."""

import threading
from collections.abc import AsyncIterator

import grpc
import pytest
from llmorch.internal.v1 import metadata_pb2, model_pb2, model_pb2_grpc
from llmorch.v1 import types_pb2

from llmorch_common.constants import DEFAULT_MODEL_ID, SECOND_MODEL_ID
from llmorch_common.contracts import Sampling
from llmorch_common.grpc_edge import create_server
from model_svc.catalog import CATALOG, locate_weights
from model_svc.engine import EnginePool, GenerationRequest, LlamaEngine
from model_svc.server import ModelServicer, register

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=[DEFAULT_MODEL_ID, SECOND_MODEL_ID])
async def real_model(request: pytest.FixtureRequest) -> AsyncIterator[model_pb2_grpc.ModelServiceStub]:
    model_id = request.param
    servicer = ModelServicer(metadata_pb2.ModelMetadata(model_id=model_id, context_limit=512))
    engine = LlamaEngine(locate_weights(model_id), CATALOG[model_id].chat, 512, n_threads=2, gpu=False)
    servicer.pool = EnginePool([engine], admission_timeout_s=30)
    server, port, _ = await create_server(lambda s: register(s, servicer), 0, "127.0.0.1")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield model_pb2_grpc.ModelServiceStub(channel)
    await server.stop(0)


def greedy(max_tokens: int) -> types_pb2.SamplingParams:
    return types_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=3)


async def test_prompt_and_chat_both_generate(real_model: model_pb2_grpc.ModelServiceStub) -> None:
    by_prompt = await real_model.Generate(
        model_pb2.GenerateRequest(prompt="The capital of France is", sampling=greedy(8)), timeout=60
    )
    by_chat = await real_model.Generate(
        model_pb2.GenerateRequest(
            messages=[types_pb2.ChatMessage(role="user", content="Name one colour.")], sampling=greedy(8)
        ),
        timeout=60,
    )
    for reply in (by_prompt, by_chat):
        assert reply.text.strip()
        assert 0 < reply.usage.completion_tokens <= 8
        assert reply.finish_reason in (types_pb2.FINISH_REASON_STOP, types_pb2.FINISH_REASON_LENGTH)


async def test_greedy_generation_is_repeatable_and_stop_strings_end_it(
    real_model: model_pb2_grpc.ModelServiceStub,
) -> None:
    request = model_pb2.GenerateRequest(prompt="Count: one, two, three,", sampling=greedy(12))
    first = await real_model.Generate(request, timeout=60)
    second = await real_model.Generate(request, timeout=60)
    assert first.text == second.text
    stop_at = first.text.strip().split()[0]
    stopped_request = model_pb2.GenerateRequest(
        prompt="Count: one, two, three,",
        sampling=types_pb2.SamplingParams(max_tokens=12, temperature=0.0, seed=3, stop=[stop_at]),
    )
    stopped = await real_model.Generate(stopped_request, timeout=60)
    assert stop_at not in stopped.text and stopped.finish_reason == types_pb2.FINISH_REASON_STOP


@pytest.mark.parametrize(
    "sampling",
    [
        types_pb2.SamplingParams(max_tokens=24, temperature=0.0),
        types_pb2.SamplingParams(max_tokens=24, temperature=0.8, seed=1234),
    ],
    ids=["greedy", "seeded"],
)
async def test_a_resumed_stream_continues_token_for_token(
    real_model: model_pb2_grpc.ModelServiceStub, sampling: types_pb2.SamplingParams
) -> None:
    """Cut the streamed token ids anywhere: resuming after them gives the rest of the uninterrupted answer."""
    generation = model_pb2.GenerateRequest(
        messages=[types_pb2.ChatMessage(role="user", content="Tell me about bread, in detail.")], sampling=sampling
    )
    chunks = [c async for c in real_model.GenerateStream(model_pb2.GenerateStreamRequest(generation=generation))]
    whole = chunks[-1].final
    pieces = [(c.delta, list(c.token_ids)) for c in chunks[:-1]]
    assert "".join(text for text, _ in pieces) == whole.text
    assert sum(len(ids) for _, ids in pieces) == whole.usage.completion_tokens
    for cut in sorted({len(pieces) // 3, len(pieces) - 2} - {0}):
        resumed_request = model_pb2.GenerateRequest()
        resumed_request.CopyFrom(generation)
        resumed_request.resume_token_ids.extend(token for _, ids in pieces[:cut] for token in ids)
        resumed = await real_model.Generate(resumed_request, timeout=60)
        streamed = "".join(text for text, _ in pieces[:cut])
        assert streamed + resumed.text == whole.text, f"cut after piece {cut}"
        assert resumed.resumed_tokens + resumed.usage.completion_tokens == whole.usage.completion_tokens


@pytest.mark.parametrize("max_tokens", [16, 1], ids=["prompt-cached", "prompt-and-logits-cached"])
def test_a_repeated_prompt_reuses_the_cache_and_samples_what_a_fresh_context_does(max_tokens: int) -> None:
    """Seeded sampling is sensitive to the least bit of the logits: the cached paths must not move them. A
    one-token answer leaves the prompt's own logits in the context, so its repeat evaluates nothing."""

    def engine() -> LlamaEngine:
        model = CATALOG[DEFAULT_MODEL_ID]
        return LlamaEngine(locate_weights(DEFAULT_MODEL_ID), model.chat, 512, n_threads=2, gpu=False)

    def text(on: LlamaEngine, prompt: str) -> str:
        sampling = Sampling(max_tokens=max_tokens, temperature=0.9, seed=77)
        return on.generate(GenerationRequest((), prompt, sampling), lambda _: None, threading.Event()).text

    warm, fresh = engine(), engine()
    prompt = "Write one sentence about the sea."
    first = text(warm, prompt)
    again = text(warm, prompt)
    text(warm, "Something else entirely.")
    after_another = text(warm, prompt)
    assert warm.prompt_cache_hits == 1, "only the immediate repeat finds its prompt cached"
    assert first == again == after_another == text(fresh, prompt)
    assert first.strip()
