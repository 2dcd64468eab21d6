"""Real generation: TTFT and tokens/s of SmolLM2 through the whole stack (streaming) against llama-cpp-python
called directly in this process on the same weights, prompt and greedy sampling."""

import statistics
import time
from typing import Any

from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

from llmorch_common.contracts import ChatTurn, Sampling
from model_svc.catalog import locate_weights
from model_svc.engine import GenerationRequest, LlamaEngine
from tools.stack import ModelGroup, Stack, StackConfig

MODEL_ID = "smollm2-135m-instruct"
PROMPT = "Explain in a few sentences why the sky is blue."
MAX_TOKENS = 64
N_THREADS = 2
CONTEXT = 2048
REAL = StackConfig(
    models=(ModelGroup(MODEL_ID, settings=(("n_threads", str(N_THREADS)), ("context_limit", str(CONTEXT)))),),
    embed=False,
)


def rates(started: float, first: float, end: float, tokens: int, after_first: float) -> dict[str, float]:
    return {
        "ttft_ms": (first - started) * 1000,
        "total_ms": (end - started) * 1000,
        "tokens": tokens,
        # Tokens delivered after the first delivery, over the time after it: the decode rate a reader sees.
        # (The stack's first delta carries a batch of tokens, so counting them here would flatter the stack.)
        "generation_tokens_per_s": after_first / (end - first) if end > first else 0.0,
        "end_to_end_tokens_per_s": tokens / (end - started),
    }


def direct_once(engine: LlamaEngine) -> dict[str, Any]:
    """llama-cpp-python's own streaming completion, on the prompt exactly as the replica renders it."""
    request = GenerationRequest((ChatTurn("user", PROMPT),), "", Sampling(max_tokens=MAX_TOKENS, temperature=0.0))
    started = time.perf_counter()
    prompt = engine.prepare(request)
    first = end = 0.0
    pieces = []
    # The stack's default repeat penalty, which llama-cpp-python's completion would otherwise leave at 1.0.
    for chunk in engine.llama.create_completion(
        prompt.tokens,
        max_tokens=MAX_TOKENS,
        temperature=0.0,
        top_p=0.95,
        repeat_penalty=request.sampling.repeat_penalty,
        stop=prompt.stops or None,
        stream=True,
    ):
        text = chunk["choices"][0]["text"]  # type: ignore[index]
        if text:
            end = time.perf_counter()
            first = first or end
            pieces.append(text)
    text = "".join(pieces)
    count = engine.count_tokens(text)
    return {**rates(started, first, end, count, count - 1), "text": text}


async def stack_once(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub, prompt: str = PROMPT, max_tokens: int = MAX_TOKENS
) -> dict[str, Any]:
    request = orchestrator_pb2.GenerateRequest(
        messages=[types_pb2.ChatMessage(role="user", content=prompt)],
        model_id=MODEL_ID,
        sampling=types_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0, top_p=0.95),
    )
    started = time.perf_counter()
    first = last_delta = 0.0
    completed: orchestrator_pb2.GenerateResponse | None = None
    deltas = 0
    first_chars = 0
    async for event in stub.GenerateStream(orchestrator_pb2.GenerateStreamRequest(request=request), timeout=300):
        if event.HasField("delta") and event.delta:
            last_delta = time.perf_counter()
            if not first:
                first, first_chars = last_delta, len(event.delta)
            deltas += 1
        elif event.HasField("completed"):
            completed = event.completed
    end = time.perf_counter()
    assert completed is not None, "stream ended without a completed message"
    timings = completed.provenance.timings
    tokens = completed.provenance.usage.completion_tokens
    engine_decode_s = (timings.generation_ms - timings.time_to_first_token_ms) / 1000
    # Tokens after the first delta, estimated from its share of the text.
    after_first = tokens * (1 - first_chars / len(completed.text)) if completed.text else 0.0
    return {
        **rates(started, first or end, end, tokens, after_first),
        "first_delta_tokens": round(tokens - after_first, 1),
        "last_delta_tokens_per_s": tokens / (last_delta - first) if last_delta > first else 0.0,
        "stream_messages": deltas,
        # The replica's own view (provenance): how fast llama.cpp ran inside the stack, free of transport delays.
        "engine_ttft_ms": timings.time_to_first_token_ms,
        "engine_tokens_per_s": tokens / engine_decode_s if engine_decode_s > 0 else 0.0,
        "queue_wait_ms": timings.queue_wait_ms,
        "text": completed.text,
        "workflow_id": completed.provenance.workflow_id,
    }


def median_of(rows: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float))]
    return {k: round(statistics.median(row[k] for row in rows), 2) for k in keys}


async def run(quick: bool) -> dict[str, Any]:
    reps = 2 if quick else 5
    path = locate_weights(MODEL_ID)
    engine = LlamaEngine(path, chat=True, context_limit=CONTEXT, n_threads=N_THREADS, gpu=False)
    direct_once(engine)  # warm-up: page the weights in
    direct: list[dict[str, Any]] = []
    through: list[dict[str, Any]] = []
    async with Stack(REAL) as stack, stack.channel() as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        await stack_once(stub)  # warm-up
        # Alternate, so any drift of the machine's load hits both alike; the stack idles while direct runs.
        for _ in range(reps):
            direct.append(direct_once(engine))
            through.append(await stack_once(stub))
    del engine
    d, s = median_of(direct), median_of(through)
    print(f"  direct {d}\n  stack  {s}", flush=True)
    return {
        "config": {
            "model": MODEL_ID,
            "weights": path.name,
            "prompt": PROMPT,
            "max_tokens": MAX_TOKENS,
            "temperature": 0.0,
            "n_threads": N_THREADS,
            "repetitions": reps,
            "path": "Envoy -> API GenerateStream -> workflow -> generate activity -> ModelService.GenerateStream",
        },
        "direct": d,
        "stack": s,
        "same_text": all(a["text"] == b["text"] for a, b in zip(direct, through, strict=True)),
        "ratios": {
            "generation_tokens_per_s": round(s["generation_tokens_per_s"] / d["generation_tokens_per_s"], 3),
            "end_to_end_tokens_per_s": round(s["end_to_end_tokens_per_s"] / d["end_to_end_tokens_per_s"], 3),
            "engine_tokens_per_s": round(s["engine_tokens_per_s"] / d["generation_tokens_per_s"], 3),
            "ttft": round(s["ttft_ms"] / d["ttft_ms"], 3),
        },
        "samples": {"direct": direct, "stack": through},
    }
