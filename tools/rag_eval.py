"""Retrieval eval over the public Query API: recall@k of rag_eval_public.jsonl against the demo corpus.

Usage: python -m tools.rag_eval [--target localhost:50051] [--ingest]
"""

import argparse
import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path

from llmorch_client.client import OrchestratorClient
from llmorch_client.corpus import DEMO_COLLECTION, python_reference
from llmorch_common.constants import ORCHESTRATOR_PORT
from tools.testdata import reference_data_dir


@dataclass(frozen=True)
class EvalReport:
    recall: float
    total: int
    misses: list[tuple[str, list[str]]]  # question, topics retrieved instead


def load_questions(path: Path) -> list[tuple[str, set[str]]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(row["question"], set(row["topics"])) for row in rows]


async def evaluate(
    client: OrchestratorClient, collection: str, questions: list[tuple[str, set[str]]], k: int = 5
) -> EvalReport:
    """A question passes when any of the top-k chunks comes from one of its acceptable topics."""
    misses = []
    for question, topics in questions:
        retrieved = [hit.document_id for hit in await client.query(collection, question, k)]
        if not topics & set(retrieved):
            misses.append((question, retrieved))
    return EvalReport(1 - len(misses) / len(questions), len(questions), misses)


async def main() -> None:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--target", default=f"localhost:{ORCHESTRATOR_PORT}")
    args.add_argument("--api-key", default=os.environ.get("LLMORCH_API_KEY", ""), help="default: $LLMORCH_API_KEY")
    args.add_argument("--collection", default=DEMO_COLLECTION)
    args.add_argument("--ingest", action="store_true", help="ingest the demo corpus first if the collection is empty")
    args.add_argument("--eval-file", type=Path, default=reference_data_dir() / "rag_eval_public.jsonl")
    options = args.parse_args()
    async with OrchestratorClient(options.target, options.api_key) as client:
        collection = await client.ensure_collection(options.collection)
        if options.ingest and collection.chunk_count == 0:
            await client.ingest(options.collection, python_reference())
        report = await evaluate(client, options.collection, load_questions(options.eval_file))
    print(f"recall@5 = {report.recall:.3f} over {report.total} questions")
    for question, retrieved in report.misses:
        print(f"  miss: {question!r} -> {retrieved}")


if __name__ == "__main__":
    asyncio.run(main())
