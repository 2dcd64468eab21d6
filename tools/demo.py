"""What `make demo` asks: list the models, then one question through the public API, with its provenance."""

import grpc
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

QUESTION = "In one sentence, what is a durable workflow?"


async def run_demo(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        api = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        listing = await api.ListModels(orchestrator_pb2.ListModelsRequest(), timeout=10)
        print("\nRegistered models:")
        for model in listing.models:
            meta = model.metadata
            print(
                f"  {meta.model_id:24} priority={meta.priority:<4} default={meta.default_flag!s:5} "
                f"health={types_pb2.HealthState.Name(model.health)} capacity={model.capacity}"
            )
        print(f"\nQ: {QUESTION}")
        reply = await api.Generate(
            orchestrator_pb2.GenerateRequest(
                messages=[types_pb2.ChatMessage(role="user", content=QUESTION)],
                sampling=types_pb2.SamplingParams(max_tokens=64, temperature=0.2, seed=7),
            ),
            timeout=300,
        )
        p = reply.provenance
        print(f"A: {reply.text.strip()}\n")
        print(f"  model:      {p.model_id} ({p.selection_reason})")
        print(f"  fallbacks:  {', '.join(f.model_id + ': ' + f.reason for f in p.fallbacks) or 'none'}")
        print(f"  usage:      {p.usage.prompt_tokens} prompt + {p.usage.completion_tokens} completion tokens")
        print(
            f"  timings:    total {p.timings.total_ms:.0f} ms, queue {p.timings.queue_wait_ms:.0f} ms, "
            f"first token {p.timings.time_to_first_token_ms:.0f} ms"
        )
        print(f"  workflow:   {p.workflow_id} (see it in the Temporal UI, http://localhost:8233)")
