"""Retrieval quality through the public Query API: recall@1, recall@5 and MRR per corpus, chunking and mode.

Corpora: pydoc_data.topics (the public 20 questions and the held-out pydoc set) and the fixed subset of the
Python 3.11 HTML documentation (the held-out HTML set); with --full-html, the whole HTML documentation ingested
through `cli ingest`'s path, for ingestion throughput and query latency at full size.

Usage: python -m tools.rag_eval [--target HOST:PORT] [--out docs/benchmarks] [--full-html] [--chunkings sections,flat]
Without --target it starts its own stack (real MiniLM embeddings, the fake LLM: only retrieval is measured).
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmorch.v1 import orchestrator_pb2, retrieval_pb2, types_pb2

from llmorch_client.client import OrchestratorClient
from llmorch_client.corpus import python_reference
from llmorch_client.documents import collect, read_document
from llmorch_client.ingest_files import ingest_paths
from llmorch_common.constants import DEFAULT_MODEL_ID
from orchestrator_svc.retrieval.chunking import chunk_document
from tools.testdata import reference_data_dir

if TYPE_CHECKING:
    from tools.stack import Stack

DATA = Path(__file__).resolve().parent / "rag_data"
HTML_ROOT = Path("/usr/share/doc/python3.11/html")
PUBLIC_QUESTIONS = reference_data_dir() / "rag_eval_public.jsonl"
MODES = {
    "dense": retrieval_pb2.RETRIEVAL_MODE_DENSE,
    "keyword": retrieval_pb2.RETRIEVAL_MODE_KEYWORD,
    "hybrid": retrieval_pb2.RETRIEVAL_MODE_HYBRID,
}
CHUNKINGS = {"sections": retrieval_pb2.CHUNKING_SECTIONS, "flat": retrieval_pb2.CHUNKING_FLAT}
CORPORA = ("pydoc", "html-subset")
DEPTH = 10  # MRR looks this deep; recall@1 and @5 are read from the same ranking


@dataclass(frozen=True)
class Question:
    text: str
    sources: frozenset[str]


@dataclass(frozen=True)
class EvalReport:
    total: int
    recall_at_1: float
    recall_at_5: float
    mrr: float
    latency_ms_p50: float
    latency_ms_p95: float
    misses: list[tuple[str, list[str]]]  # question, documents retrieved instead (top 5)

    @property
    def recall(self) -> float:
        return self.recall_at_5


def load_questions(path: Path) -> list[Question]:
    """A question's relevant documents are under "sources" (held-out sets) or "topics" (the public set)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [Question(row["question"], frozenset(row.get("sources") or row["topics"])) for row in rows]


async def evaluate(
    client: OrchestratorClient,
    collection: str,
    questions: Sequence[Question],
    mode: retrieval_pb2.RetrievalMode.ValueType = retrieval_pb2.RETRIEVAL_MODE_UNSPECIFIED,
) -> EvalReport:
    """A question's rank is that of the first chunk from one of its sources; a miss at 5 lists what came instead."""
    ranks: list[int | None] = []
    latencies: list[float] = []
    misses = []
    for question in questions:
        started = time.perf_counter()
        hits = await client.query(collection, question.text, DEPTH, mode)
        latencies.append((time.perf_counter() - started) * 1000)
        documents = [hit.document_id for hit in hits]
        rank = next((i for i, d in enumerate(documents, start=1) if d in question.sources), None)
        ranks.append(rank)
        if rank is None or rank > 5:
            misses.append((question.text, documents[:5]))
    total = len(questions)
    return EvalReport(
        total,
        sum(1 for r in ranks if r == 1) / total,
        sum(1 for r in ranks if r is not None and r <= 5) / total,
        sum(1 / r for r in ranks if r is not None) / total,
        statistics.median(latencies),
        statistics.quantiles(latencies, n=20)[-1] if len(latencies) > 1 else latencies[0],
        misses,
    )


def html_subset(root: Path) -> dict[str, retrieval_pb2.Document]:
    pages = [line.strip() for line in (DATA / "html_subset.txt").read_text().splitlines() if line.strip()]
    documents = {}
    for page in pages:
        document = read_document(root / page, root)
        documents[document.document_id] = retrieval_pb2.Document(
            id=document.document_id, text=document.text, metadata=document.metadata
        )
    return documents


async def ingest_corpus(
    client: OrchestratorClient, collection: str, documents: dict[str, retrieval_pb2.Document], chunking: str
) -> dict[str, float]:
    """Ingest into a fresh collection; returns its size and the throughput measured."""
    await drop_collection(client, collection)
    await client.ensure_collection(collection)
    started = time.perf_counter()
    ingestion_id = await client.start_ingestion(collection, list(documents.values()), CHUNKINGS[chunking])
    progress = await client.wait_ingestion(ingestion_id)
    seconds = time.perf_counter() - started
    return {
        "documents": len(documents),
        "chunks": progress.chunks_done,
        "seconds": seconds,
        "chunks_per_s": progress.chunks_done / seconds,
    }


def report_row(report: EvalReport) -> dict[str, Any]:
    return {
        "questions": report.total,
        "recall_at_1": report.recall_at_1,
        "recall_at_5": report.recall_at_5,
        "mrr": report.mrr,
        "latency_ms_p50": report.latency_ms_p50,
        "latency_ms_p95": report.latency_ms_p95,
        "misses_at_5": [{"question": q, "retrieved": r} for q, r in report.misses],
    }


async def run_ablation(
    client: OrchestratorClient, html_root: Path, chunkings: list[str], record: dict[str, Any], out: Path | None
) -> None:
    """Fills record["ablation"] and rewrites the report after each corpus and chunking, so an interrupted run
    still leaves what it measured (the report says which runs are missing)."""
    corpora: dict[str, tuple[dict[str, retrieval_pb2.Document], dict[str, Path]]] = {
        "pydoc": (
            {k: retrieval_pb2.Document(id=k, text=v) for k, v in python_reference().items()},
            {"public": PUBLIC_QUESTIONS, "heldout": DATA / "heldout_pydoc.jsonl"},
        ),
        "html-subset": (html_subset(html_root), {"heldout": DATA / "heldout_html.jsonl"}),
    }
    results: dict[str, Any] = record.setdefault("ablation", {})
    for corpus, (documents, question_sets) in corpora.items():
        for chunking in chunkings:
            collection = f"eval-{corpus}-{chunking}"
            print(f"{corpus} / {chunking}: ingesting {len(documents)} documents ...", flush=True)
            ingestion = await ingest_corpus(client, collection, documents, chunking)
            print(f"  {ingestion['chunks']} chunks in {ingestion['seconds']:.0f} s", flush=True)
            entry: dict[str, Any] = {"ingestion": ingestion, "sets": {}}
            for name, path in question_sets.items():
                questions = load_questions(path)
                for mode, value in MODES.items():
                    report = await evaluate(client, collection, questions, value)
                    entry["sets"].setdefault(name, {})[mode] = report_row(report)
                    print(
                        f"  {name:8} {mode:8} recall@1 {report.recall_at_1:.3f}  recall@5 {report.recall_at_5:.3f}  "
                        f"MRR {report.mrr:.3f}  ({report.total} questions)",
                        flush=True,
                    )
            results.setdefault(corpus, {})[chunking] = entry
            write(record, out, "rag_quality")


async def find_collection(client: OrchestratorClient, collection: str) -> retrieval_pb2.Collection | None:
    listing = await client.retrieval.ListCollections(retrieval_pb2.ListCollectionsRequest())
    return next((c for c in listing.collections if c.name == collection), None)


async def drop_collection(client: OrchestratorClient, collection: str) -> None:
    """A run starts from an empty collection, whatever an earlier run left."""
    if await find_collection(client, collection) is not None:
        await client.retrieval.DeleteCollection(retrieval_pb2.DeleteCollectionRequest(name=collection))


async def collection_chunks(client: OrchestratorClient, collection: str) -> int:
    found = await find_collection(client, collection)
    return found.chunk_count if found is not None else 0


async def kill_worker_midway(client: OrchestratorClient, stack: "Stack", collection: str, expected: int) -> float:
    """SIGKILL the stack's worker process once a third of the chunks are stored, then start it again, the way
    production loses a pod; returns the fraction stored at the kill."""
    while (stored := await collection_chunks(client, collection)) < expected / 3:
        await asyncio.sleep(1)
    worker = stack.child("worker")
    worker.kill()
    print(f"  killed the worker at {stored}/{expected} chunks", flush=True)
    worker.spawn()
    await worker.wait_ready()
    return stored / expected


async def grounded_answers(
    client: OrchestratorClient, collection: str, questions: Sequence[Question]
) -> dict[str, Any]:
    """A RAG request per question: does a citation of the answer name one of the question's pages?"""
    cited: list[dict[str, Any]] = []
    right = 0
    for question in questions:
        reply = await client.generate(
            orchestrator_pb2.GenerateRequest(
                prompt=question.text,
                rag=types_pb2.RagOptions(collection=collection, top_k=3),
                sampling=types_pb2.SamplingParams(max_tokens=8),
            ),
            timeout_s=120,
        )
        sources = [citation.source for citation in reply.provenance.citations]
        right_page = bool(question.sources & set(sources))
        right += right_page
        cited.append({"question": question.text, "cited": sources, "right_page": right_page})
    return {"right_page_rate": right / len(cited), "answers": cited}


async def run_full_html(
    client: OrchestratorClient, html_root: Path, state_dir: Path, stack: "Stack | None"
) -> dict[str, Any]:
    """The whole HTML documentation through the CLI's ingestion path, with the worker killed a third of the way
    when this run started the stack; then the chunk count against the chunker's (no duplicates), the held-out
    HTML questions, and grounded answers."""
    collection = "eval-html-full"
    await drop_collection(client, collection)
    documents = [read_document(file, root) for file, root in collect([html_root])]
    expected = sum(len(chunk_document(d.document_id, d.text)) for d in documents if d.text.strip())
    state = state_dir / "rag-eval-full-html.json"
    state.unlink(missing_ok=True)
    killer = asyncio.create_task(kill_worker_midway(client, stack, collection, expected)) if stack else None
    started = time.perf_counter()
    summary = await ingest_paths(client, collection, [html_root], state)
    seconds = time.perf_counter() - started
    killed_at = await killer if killer else None
    stored = await collection_chunks(client, collection)
    questions = load_questions(DATA / "heldout_html.jsonl")
    entry: dict[str, Any] = {
        "ingestion": {
            "documents": summary.documents_sent,
            "chunks": summary.chunks,
            "seconds": seconds,
            "documents_per_s": summary.documents_sent / seconds,
            "chunks_per_s": summary.chunks / seconds,
            "worker_killed_at_fraction": killed_at,
            "chunks_stored": stored,
            "chunks_expected": expected,
        },
        "heldout": {},
    }
    print(f"  {stored} chunks stored, {expected} expected, in {seconds:.0f} s", flush=True)
    for mode, value in MODES.items():
        entry["heldout"][mode] = report_row(await evaluate(client, collection, questions, value))
    entry["grounded"] = await grounded_answers(client, collection, questions)
    return entry


def table(results: dict[str, Any]) -> str:
    lines = [
        "| corpus | chunking | chunks | questions | mode | recall@1 | recall@5 | MRR@10 | query p50 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for corpus, by_chunking in results.items():
        for chunking, entry in by_chunking.items():
            for name, by_mode in entry["sets"].items():
                for mode, row in by_mode.items():
                    lines.append(
                        f"| {corpus} | {chunking} | {entry['ingestion']['chunks']} | {name} ({row['questions']}) | "
                        f"{mode} | {row['recall_at_1']:.3f} | {row['recall_at_5']:.3f} | {row['mrr']:.3f} | "
                        f"{row['latency_ms_p50']:.1f} |"
                    )
    return "\n".join(lines)


def missing_note(results: dict[str, Any]) -> str:
    """Says which corpus and chunking pairs an interrupted or partial run did not reach."""
    missing = [f"{c} / {k}" for c in CORPORA for k in CHUNKINGS if k not in results.get(c, {})]
    return f"Not in this record (the run did not reach them): {', '.join(missing)}." if missing else ""


def markdown(record: dict[str, Any]) -> str:
    """rag_quality.md (the ablation, and the full run when one run did both) or rag_full_html.md (the full run)."""
    from tools.bench.machine import markdown as machine_markdown

    title = "Retrieval quality: modes by chunking, held-out questions"
    if "ablation" not in record:
        title = "Retrieval at full size: the whole Python 3.11 HTML documentation"
    parts = [
        f"# {title}",
        "",
        machine_markdown(record["machine"]).replace(" (`make bench` runs it without flags)", ""),
        "",
        "Through the public `RetrievalService/Query`. Recall@k: a question counts when a chunk from one of its "
        "named sources is in the top k; MRR over the top 10. `public` is the 20 questions tuning may look at; "
        "`heldout` are the frozen sets in `tools/rag_data/` (written before tuning).",
    ]
    if "ablation" in record:
        parts += ablation_markdown(record["ablation"])
    full = record.get("full_html")
    if full:
        parts += full_html_markdown(full)
    else:
        parts += ["", "The full HTML ingestion (`make bench-rag-full`, rag_full_html.md) is not part of this record."]
    return "\n".join(parts) + "\n"


def ablation_markdown(ablation: dict[str, Any]) -> list[str]:
    parts = [
        "",
        table(ablation),
        "",
        missing_note(ablation),
        "",
        "Ingestion (one workflow per corpus and chunking, real MiniLM embeddings):",
        "",
        "| corpus | chunking | documents | chunks | seconds | chunks/s |",
        "|---|---|---|---|---|---|",
    ]
    for corpus, by_chunking in ablation.items():
        for chunking, entry in by_chunking.items():
            i = entry["ingestion"]
            parts.append(
                f"| {corpus} | {chunking} | {i['documents']} | {i['chunks']} | {i['seconds']:.0f} | "
                f"{i['chunks_per_s']:.1f} |"
            )
    return parts


def full_html_markdown(full: dict[str, Any]) -> list[str]:
    i = full["ingestion"]
    parts = [
        "",
        f"Full HTML documentation through `cli ingest`'s path: {i['documents']} pages, {i['chunks']} chunks in "
        f"{i['seconds']:.0f} s ({i['documents_per_s']:.2f} pages/s, {i['chunks_per_s']:.1f} chunks/s). "
        + worker_kill_note(i),
        "",
        "Held-out HTML questions over the whole documentation:",
        "",
        "| mode | recall@1 | recall@5 | MRR@10 | query p50 ms | query p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for mode, row in full["heldout"].items():
        parts.append(
            f"| {mode} | {row['recall_at_1']:.3f} | {row['recall_at_5']:.3f} | {row['mrr']:.3f} | "
            f"{row['latency_ms_p50']:.1f} | {row['latency_ms_p95']:.1f} |"
        )
    grounded = full["grounded"]
    return [
        *parts,
        "",
        f"Grounded answers (RAG, top 3, the held-out HTML questions, the server's default mode): "
        f"{grounded['right_page_rate']:.3f} of the answers cite one of the question's pages.",
    ]


def worker_kill_note(ingestion: dict[str, Any]) -> str:
    stored, expected = ingestion["chunks_stored"], ingestion["chunks_expected"]
    verdict = "no chunk duplicated or lost" if stored == expected else f"**{stored - expected:+d} chunks off**"
    if ingestion["worker_killed_at_fraction"] is None:
        return f"The collection holds {stored} chunks against the chunker's {expected}: {verdict}."
    return (
        f"The worker was killed with SIGKILL {ingestion['worker_killed_at_fraction']:.0%} of the way and started "
        f"again; the collection holds {stored} chunks against the chunker's {expected}: {verdict}."
    )


async def main() -> None:
    args = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    args.add_argument("--target", default="", help="a running API; empty starts a stack for the run")
    args.add_argument("--api-key", default=os.environ.get("LLMORCH_API_KEY", ""), help="default: $LLMORCH_API_KEY")
    args.add_argument("--html-root", type=Path, default=HTML_ROOT)
    args.add_argument("--chunkings", default="sections,flat")
    args.add_argument("--full-html", action="store_true", help="also ingest the whole HTML documentation")
    args.add_argument("--no-ablation", action="store_true", help="only the full HTML run")
    args.add_argument("--out", type=Path, default=None, help="write rag_quality.json and rag_quality.md here")
    args.add_argument("--render-only", action="store_true", help="measure nothing; rebuild the Markdown from --out")
    options = args.parse_args()
    if options.render_only:
        for name in ("rag_quality", "rag_full_html"):
            path = options.out / f"{name}.json"
            if path.exists():
                (options.out / f"{name}.md").write_text(markdown(json.loads(path.read_text())))
        return
    if not options.html_root.is_dir():
        raise SystemExit(f"{options.html_root} is missing: install Debian's python3.11-doc (make debian-docs)")
    from tools.bench.machine import describe

    record: dict[str, Any] = {"machine": describe(sys.argv[1:], "tools.rag_eval")}
    async with AsyncExitStack() as exits:
        stack = None if options.target else await start_stack(exits)
        target, api_key = (options.target, options.api_key) if stack is None else (stack.api_target, stack.api_key)
        client = await exits.enter_async_context(OrchestratorClient(target, api_key))
        if not options.no_ablation:
            await run_ablation(client, options.html_root, options.chunkings.split(","), record, options.out)
        if options.full_html:
            record["full_html"] = await run_full_html(client, options.html_root, Path("data"), stack)
            write(record, options.out, "rag_full_html" if options.no_ablation else "rag_quality")


def write(record: dict[str, Any], out: Path | None, name: str) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(record))


async def start_stack(exits: AsyncExitStack) -> "Stack":
    """The stack as `make up` runs it, but with the fake LLM: only retrieval is measured."""
    from tools.stack import ModelGroup, Stack, StackConfig

    config = StackConfig(models=(ModelGroup(DEFAULT_MODEL_ID, "fake"),), envoy=False, label="rag-eval")
    return await exits.enter_async_context(Stack(config))


if __name__ == "__main__":
    asyncio.run(main())
