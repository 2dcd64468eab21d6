"""Command line for the public API: `python -m orchestrator_svc.cli ingest|query|ask` (see --help)."""

import argparse
import asyncio
import sys
from pathlib import Path

from llmorch.v1 import retrieval_pb2

from llmorch_common.constants import ORCHESTRATOR_PORT
from orchestrator_svc.client import OrchestratorClient, question_request
from orchestrator_svc.corpus import DEMO_COLLECTION, python_reference


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


async def ask(client: OrchestratorClient, args: argparse.Namespace) -> None:
    request = question_request(args.question, args.model, args.collection or "", args.top_k, args.max_tokens)
    async for event in client.stream(request):
        kind = event.WhichOneof("event")
        if kind == "selected":
            print(f"[{event.selected.model_id}: {event.selected.reason}]", file=sys.stderr)
        elif kind == "delta":
            print(event.delta, end="", flush=True)
        elif kind == "completed":
            provenance = event.completed.provenance
            print()
            for number, citation in enumerate(provenance.citations, start=1):
                print(f"  [{number}] {citation.source} ({citation.chunk_id}, score {citation.score:.3f})")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m orchestrator_svc.cli", description=__doc__)
    root.add_argument("--target", default=f"localhost:{ORCHESTRATOR_PORT}", help="API host:port (or Envoy :8080)")
    commands = root.add_subparsers(dest="command", required=True)
    ingest_cmd = commands.add_parser("ingest", help="ingest files, or the Python reference with --pydoc")
    ingest_cmd.add_argument("files", nargs="*")
    ingest_cmd.add_argument("--pydoc", action="store_true", help="ingest the Python Language Reference")
    ingest_cmd.add_argument("--collection", default=DEMO_COLLECTION)
    query_cmd = commands.add_parser("query", help="top-k chunks for a text")
    query_cmd.add_argument("text")
    query_cmd.add_argument("--collection", default=DEMO_COLLECTION)
    query_cmd.add_argument("--top-k", type=int, default=5)
    ask_cmd = commands.add_parser("ask", help="ask a question and stream the answer")
    ask_cmd.add_argument("question")
    ask_cmd.add_argument("--collection", default="", help="ground the answer in this collection")
    ask_cmd.add_argument("--model", default="", help="model id; empty lets the router choose")
    ask_cmd.add_argument("--top-k", type=int, default=5)
    ask_cmd.add_argument("--max-tokens", type=int, default=128)
    return root


async def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    commands = {"ingest": ingest, "query": query, "ask": ask}
    async with OrchestratorClient(args.target) as client:
        await commands[args.command](client, args)


if __name__ == "__main__":
    asyncio.run(main())
