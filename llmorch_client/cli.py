"""Command line for the public API: `python -m llmorch_client.cli models|ingest|query|ask|embed` (see --help)."""

import argparse
import asyncio
import os
import sys
from pathlib import Path

from llmorch.v1 import retrieval_pb2, types_pb2

from llmorch_client.client import OrchestratorClient, question_request, tls_credentials
from llmorch_client.corpus import DEMO_COLLECTION, python_reference
from llmorch_common.constants import ORCHESTRATOR_PORT


def progress_bar(progress: retrieval_pb2.GetIngestionResponse, width: int = 40) -> None:
    total = max(progress.documents_total, 1)
    filled = width * progress.documents_done // total
    bar = "#" * filled + "-" * (width - filled)
    sys.stderr.write(f"\r  [{bar}] {progress.documents_done}/{total} documents, {progress.chunks_done} chunks")
    sys.stderr.flush()


def read_documents(args: argparse.Namespace) -> dict[str, str]:
    return python_reference() if args.pydoc else {Path(f).name: Path(f).read_text() for f in args.files}


async def ingest(client: OrchestratorClient, args: argparse.Namespace) -> None:
    documents = read_documents(args)
    if not documents:
        sys.exit("nothing to ingest: pass files or --pydoc")
    await client.ensure_collection(args.collection)
    chunks = await client.ingest(args.collection, documents, progress_bar)
    sys.stderr.write("\n")
    print(f"ingested {len(documents)} documents as {chunks} chunks into {args.collection!r}")


async def query(client: OrchestratorClient, args: argparse.Namespace) -> None:
    for hit in await client.query(args.collection, args.text, args.top_k):
        preview = " ".join(hit.text.split())[:100]
        print(f"{hit.score:.3f}  {hit.chunk_id:28}  {preview}")


async def models(client: OrchestratorClient, args: argparse.Namespace) -> None:
    for model in await client.list_models():
        kind = types_pb2.ModelType.Name(model.model_type).removeprefix("MODEL_TYPE_").lower()
        health = types_pb2.HealthState.Name(model.health).removeprefix("HEALTH_STATE_").lower()
        default = " default" if model.is_default else ""
        print(
            f"{model.model_id:24} {kind:9} {health:11} load {model.in_flight}/{model.capacity}, "
            f"queued {model.queue_depth}, priority {model.priority}{default}"
        )


async def embed(client: OrchestratorClient, args: argparse.Namespace) -> None:
    reply = await client.embed(args.texts)
    for text, embedding in zip(args.texts, reply.embeddings, strict=True):
        head = ", ".join(f"{v:+.3f}" for v in embedding.values[:4])
        print(f"{len(embedding.values)}-d, {embedding.token_count} tokens  [{head}, ...]  {text[:60]!r}")
    print(f"model: {reply.model_id}", file=sys.stderr)


async def ask(client: OrchestratorClient, args: argparse.Namespace) -> None:
    request = question_request(args.question, args.model, args.collection or "", args.top_k, args.max_tokens)
    async for event in client.stream(request):
        kind = event.WhichOneof("event")
        if kind == "selected":
            print(f"[{event.selected.model_id}: {event.selected.reason}]", file=sys.stderr)
        elif kind == "delta":
            print(event.delta, end="", flush=True)
        elif kind == "reset":  # the text so far is void; what follows starts the answer over
            print(f"\n[reset: {event.reset.reason}]", file=sys.stderr)
        elif kind == "completed":
            provenance = event.completed.provenance
            print()
            for number, citation in enumerate(provenance.citations, start=1):
                print(f"  [{number}] {citation.source} ({citation.chunk_id}, score {citation.score:.3f})")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m llmorch_client.cli", description=__doc__)
    root.add_argument("--target", default=f"localhost:{ORCHESTRATOR_PORT}", help="API host:port (or Envoy :8080)")
    root.add_argument(
        "--api-key",
        default=os.environ.get("LLMORCH_API_KEY", ""),
        help="API key (default: $LLMORCH_API_KEY; `make demo` prints a development key)",
    )
    root.add_argument("--tls", action="store_true", help="TLS, trusting the system's roots (Envoy with a certificate)")
    root.add_argument("--tls-ca", default=None, help="TLS, trusting only this PEM CA (implies --tls)")
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("models", help="list the models with their health and load")
    embed_cmd = commands.add_parser("embed", help="embed texts with the platform's embedding model")
    embed_cmd.add_argument("texts", nargs="+")
    ingest_cmd = commands.add_parser("ingest", help="ingest files, or the Python reference with --pydoc")
    ingest_cmd.add_argument("files", nargs="*")
    ingest_cmd.add_argument("--pydoc", action="store_true", help="ingest the Python Language Reference")
    ingest_cmd.add_argument("--collection", default=DEMO_COLLECTION)
    query_cmd = commands.add_parser("query", help="top-k chunks for a text")
    query_cmd.add_argument("text")
    query_cmd.add_argument("--collection", default=DEMO_COLLECTION)
    query_cmd.add_argument("--top-k", type=int, default=0, help="chunks to return; 0 takes the server's default")
    ask_cmd = commands.add_parser("ask", help="ask a question and stream the answer")
    ask_cmd.add_argument("question")
    ask_cmd.add_argument("--collection", default="", help="ground the answer in this collection")
    ask_cmd.add_argument("--model", default="", help="model id; empty lets the router choose")
    ask_cmd.add_argument("--top-k", type=int, default=0, help="chunks to ground on; 0 takes the server's default")
    ask_cmd.add_argument("--max-tokens", type=int, default=None, help="unset takes the server's default")
    return root


async def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if not args.api_key:
        sys.exit("an API key is required: --api-key or LLMORCH_API_KEY (create one with `llmorch-admin keys create`)")
    commands = {"models": models, "ingest": ingest, "query": query, "ask": ask, "embed": embed}
    credentials = tls_credentials(args.tls, args.tls_ca)
    async with OrchestratorClient(args.target, args.api_key, credentials=credentials) as client:
        await commands[args.command](client, args)


def run() -> None:
    asyncio.run(main())


if __name__ == "__main__":
    run()
