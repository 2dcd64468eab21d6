"""What `make demo` does once the stack is up: list the models, ingest the demo corpus, ask a grounded question."""

import sys

import grpc
from llmorch.v1 import types_pb2

from llmorch_client.cli import progress_bar
from llmorch_client.client import OrchestratorClient, question_request
from llmorch_client.corpus import DEMO_COLLECTION, python_reference

QUESTION = "What does the assert statement do when optimization is requested?"


async def run_demo(target: str, api_key: str, credentials: grpc.ChannelCredentials | None = None) -> None:
    async with OrchestratorClient(target, api_key, credentials=credentials) as client:
        print("\nRegistered models:")
        for model in await client.list_models():
            print(
                f"  {model.model_id:24} {types_pb2.ModelType.Name(model.model_type):22} priority={model.priority:<4} "
                f"default={model.is_default!s:5} health={types_pb2.HealthState.Name(model.health)}"
            )
        collection = await client.ensure_collection(DEMO_COLLECTION)
        if collection.chunk_count == 0:
            print(f"\nIngesting the Python Language Reference into {DEMO_COLLECTION!r} (durable workflow):")
            chunks = await client.ingest(DEMO_COLLECTION, python_reference(), progress_bar)
            sys.stderr.write("\n")
            print(f"  {chunks} chunks stored")
        else:
            print(f"\n{DEMO_COLLECTION!r} already holds {collection.chunk_count} chunks")

        print(f"\nQ: {QUESTION}\nA: ", end="", flush=True)
        request = question_request(QUESTION, collection=DEMO_COLLECTION, top_k=3, max_tokens=96, seed=7)
        async for event in client.stream(request):
            if event.WhichOneof("event") == "delta":
                print(event.delta, end="", flush=True)
            elif event.WhichOneof("event") == "reset":
                print("\nA (restarted): ", end="", flush=True)
            elif event.WhichOneof("event") == "completed":
                print_provenance(event.completed.provenance)


def print_provenance(p: types_pb2.Provenance) -> None:
    print("\n")
    print(f"  model:      {p.model_id} ({p.selection_reason})")
    print(f"  fallbacks:  {', '.join(f.model_id + ': ' + f.reason for f in p.fallbacks) or 'none'}")
    print(f"  usage:      {p.usage.prompt_tokens} prompt + {p.usage.completion_tokens} completion tokens")
    print(
        f"  timings:    total {p.timings.total_ms:.0f} ms (retrieval {p.timings.retrieval_ms:.0f}, "
        f"queue {p.timings.queue_wait_ms:.0f}, first token {p.timings.time_to_first_token_ms:.0f})"
    )
    for number, citation in enumerate(p.citations, start=1):
        print(f"  [{number}] {citation.source:20} score {citation.score:.3f}  ({citation.chunk_id})")
    print(f"  workflow:   {p.workflow_id} (Temporal UI: http://localhost:8233)")
