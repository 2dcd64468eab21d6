"""Token-exact resume and continued fallback on real SmolLM2 replicas that are SIGKILLed mid-stream.

Two replicas serve one queue; a streaming request loses its replica after at least 40 recorded tokens. The retry
on the survivor must continue from the workflow's record (provenance), generate only what is left (counted by the
replica itself), and end with the text an uninterrupted run produces. Then the last replica dies and the fallback
model continues the text the client already has.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from helpers import (
    Orchestrator,
    eventually,
    model_process,
    orchestrator_settings,
    start_orchestrator,
    stop_orchestrator,
    workflow_id_of,
)
from llmorch.internal.v1 import model_pb2, model_pb2_grpc
from llmorch.v1 import orchestrator_pb2, types_pb2
from temporalio.client import Client

from llmorch_common.constants import DEFAULT_MODEL_ID, SECOND_MODEL_ID
from llmorch_common.contracts import PROGRESS_QUERY, GenerationProgress
from tools.stack import Child

pytestmark = pytest.mark.slow
MAX_TOKENS = 200
KILL_AFTER_TOKENS = 40
PROMPT = "Write a long, detailed essay about the history of bread, with many paragraphs."


@dataclass
class RealStack:
    orchestrator: Orchestrator
    temporal_address: str
    tmp: Path
    replicas: list[Child] = field(default_factory=list)

    async def add(self, model_id: str = DEFAULT_MODEL_ID) -> Child:
        child = model_process(
            model_id, self.temporal_address, self.orchestrator.api.internal_port, self.tmp, engine="llama", n_threads=1
        )
        await child.start()
        self.replicas.append(child)
        return child

    async def in_flight(self, child: Child) -> int:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{child.port}") as channel:
            info = await model_pb2_grpc.ModelServiceStub(channel).GetModelInfo(model_pb2.GetModelInfoRequest())
            return int(info.in_flight)


@pytest.fixture(scope="module")
async def stack(
    temporal_client: Client, temporal_address: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RealStack]:
    tmp = tmp_path_factory.mktemp("resume")
    # Heartbeat timeout 3 s: a killed replica's attempt is retried on the survivor about 3 s later.
    orchestrator = await start_orchestrator(temporal_client, orchestrator_settings(tmp, generate_attempts=3))
    stack = RealStack(orchestrator, temporal_address, tmp)
    await asyncio.gather(stack.add(), stack.add())
    yield stack
    for child in stack.replicas:
        if child.alive():
            await child.terminate()
    await stop_orchestrator(orchestrator)


def streaming_request(temperature: float, seed: int) -> orchestrator_pb2.GenerateRequest:
    return orchestrator_pb2.GenerateRequest(
        request_id=f"resume-{uuid.uuid4().hex}",
        messages=[types_pb2.ChatMessage(role="user", content=PROMPT)],
        model_id=DEFAULT_MODEL_ID,
        sampling=types_pb2.SamplingParams(max_tokens=MAX_TOKENS, temperature=temperature, seed=seed),
    )


def client_text(events: list[orchestrator_pb2.GenerateStreamResponse]) -> str:
    text = ""
    for event in events:
        if event.WhichOneof("event") == "reset":
            text = ""
        elif event.WhichOneof("event") == "delta":
            text += event.delta
    return text


async def stream_and_kill(
    stack: RealStack, temporal_client: Client, request: orchestrator_pb2.GenerateRequest, kill_all: bool
) -> tuple[list[orchestrator_pb2.GenerateStreamResponse], str]:
    """Stream the request; once the workflow has recorded KILL_AFTER_TOKENS tokens, SIGKILL the replica that is
    generating (or every replica of the model). Returns the events and the text streamed before the kill."""
    events: list[orchestrator_pb2.GenerateStreamResponse] = []
    call = stack.orchestrator.stub.GenerateStream(orchestrator_pb2.GenerateStreamRequest(request=request))

    async def follow() -> None:
        async for event in call:
            events.append(event)

    follower = asyncio.create_task(follow())
    handle = temporal_client.get_workflow_handle(workflow_id_of(request.request_id))

    async def recorded_enough() -> bool:
        progress = await handle.query(PROGRESS_QUERY, 1, result_type=GenerationProgress)
        return len(progress.token_ids) >= KILL_AFTER_TOKENS

    await eventually(recorded_enough, timeout_s=120, interval_s=0.02)
    busy = [child for child in stack.replicas if child.alive() and await stack.in_flight(child)]
    assert busy, "a replica is generating"
    model_replicas = [c for c in stack.replicas if c.alive() and "smollm" in c.name]
    for child in model_replicas if kill_all else busy[:1]:
        child.kill()
    streamed_before = client_text(events)
    await asyncio.wait_for(follower, 300)
    return events, streamed_before


@pytest.mark.parametrize(("temperature", "seed"), [(0.0, 11), (0.8, 1234)], ids=["greedy", "sampled"])
async def test_a_killed_replica_is_resumed_token_exactly_on_the_survivor(
    stack: RealStack, temporal_client: Client, temperature: float, seed: int
) -> None:
    while sum(child.alive() and "smollm" in child.name for child in stack.replicas) < 2:
        await stack.add()
    uninterrupted = await stack.orchestrator.stub.Generate(streaming_request(temperature, seed), timeout=300)
    assert uninterrupted.provenance.usage.completion_tokens > KILL_AFTER_TOKENS + 20, "the answer outlasts the kill"

    events, streamed_before = await stream_and_kill(stack, temporal_client, streaming_request(temperature, seed), False)
    final = events[-1].completed
    assert final.text == uninterrupted.text, "resumed token for token: the same text as an uninterrupted run"
    assert client_text(events) == final.text and streamed_before and final.text.startswith(streamed_before)
    assert not [e for e in events if e.WhichOneof("event") == "reset"], "the client saw only a pause"
    (part,) = final.provenance.parts
    print(f"{temperature=}: resumed at {part.resumed_at_tokens}, the survivor generated {part.generated_tokens}")
    assert part.model_id == DEFAULT_MODEL_ID and part.attempts >= 2
    assert part.resumed_at_tokens >= KILL_AFTER_TOKENS
    assert part.generated_tokens <= MAX_TOKENS - part.resumed_at_tokens
    assert part.resumed_at_tokens + part.generated_tokens == uninterrupted.provenance.usage.completion_tokens


async def test_a_fallback_continues_the_streamed_text_on_another_model(
    stack: RealStack, temporal_client: Client
) -> None:
    await stack.add(SECOND_MODEL_ID)

    async def both_serving() -> bool:
        listing = await stack.orchestrator.stub.ListModels(orchestrator_pb2.ListModelsRequest())
        serving = {m.model_id for m in listing.models if m.health == types_pb2.HEALTH_STATE_SERVING}
        return {DEFAULT_MODEL_ID, SECOND_MODEL_ID} <= serving

    await eventually(both_serving, timeout_s=60)
    request = streaming_request(0.0, 5)
    request.model_id = ""  # the router's default (SmolLM2), then the fallback
    events, streamed_before = await stream_and_kill(stack, temporal_client, request, kill_all=True)
    final = events[-1].completed
    assert streamed_before and final.text.startswith(streamed_before), "byte for byte what was streamed"
    assert client_text(events) == final.text
    assert [p.model_id for p in final.provenance.parts] == [DEFAULT_MODEL_ID, SECOND_MODEL_ID]
    assert final.provenance.parts[1].carried_chars >= len(streamed_before)
    assert final.provenance.model_id == SECOND_MODEL_ID
    print(f"fallback: {len(streamed_before)} characters streamed before the kill, parts {final.provenance.parts}")
