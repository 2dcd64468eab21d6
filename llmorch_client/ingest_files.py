"""`cli ingest PATH…`: files and folders in resumable batches, with progress bars.

A state file remembers each document's content hash once stored, and the ingestion ids still running. Run again
after an interruption, and it waits for those ingestions (durable workflows, which kept going meanwhile) and sends
only what is new or changed; a changed file's document replaces its old chunks on the server.
"""

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from llmorch.v1 import retrieval_pb2
from tqdm import tqdm

from llmorch_client.client import OrchestratorClient, batches
from llmorch_client.documents import collect, read_document


@dataclass
class IngestState:
    """What a previous run stored (document id -> content hash) and started (ingestion id -> its documents)."""

    path: Path
    done: dict[str, str] = field(default_factory=dict)
    pending: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "IngestState":
        if not path.exists():
            return cls(path)
        saved = json.loads(path.read_text())
        return cls(path, dict(saved["done"]), {k: dict(v) for k, v in saved["pending"].items()})

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"done": self.done, "pending": self.pending}, indent=1, sort_keys=True))
        temporary.replace(self.path)  # atomic: an interruption leaves the old state or the new one

    def finish(self, ingestion_id: str) -> None:
        self.done.update(self.pending.pop(ingestion_id, {}))
        self.save()


@dataclass(frozen=True)
class IngestSummary:
    documents_sent: int
    documents_unchanged: int
    chunks: int


def content_hash(document: retrieval_pb2.Document) -> str:
    digest = hashlib.sha256(document.text.encode())
    digest.update(json.dumps(dict(document.metadata), sort_keys=True).encode())
    return digest.hexdigest()


async def ingest_paths(
    client: OrchestratorClient,
    collection: str,
    paths: Sequence[Path],
    state_path: Path,
    chunking: retrieval_pb2.Chunking.ValueType = retrieval_pb2.CHUNKING_UNSPECIFIED,
    show_progress: bool = True,
) -> IngestSummary:
    state = IngestState.load(state_path)
    await client.ensure_collection(collection)
    chunks = 0
    for ingestion_id in list(state.pending):  # left running by an interrupted run
        chunks += await _wait(client, state, ingestion_id, show_progress)
    files = collect(paths)
    documents = []
    for file, root in tqdm(files, desc="reading", unit="file", disable=not show_progress, file=sys.stderr):
        document = read_document(file, root)
        if document.text.strip():
            documents.append(
                retrieval_pb2.Document(id=document.document_id, text=document.text, metadata=document.metadata)
            )
    changed = [d for d in documents if state.done.get(d.id) != content_hash(d)]
    for batch in batches(changed):
        ingestion_id = await client.start_ingestion(collection, batch, chunking)
        state.pending[ingestion_id] = {d.id: content_hash(d) for d in batch}
        state.save()
        chunks += await _wait(client, state, ingestion_id, show_progress)
    return IngestSummary(len(changed), len(documents) - len(changed), chunks)


async def _wait(client: OrchestratorClient, state: IngestState, ingestion_id: str, show_progress: bool) -> int:
    """Follow one ingestion with a progress bar; returns its chunks. One that failed, or that the server no longer
    knows, is dropped from the state, so the next run sends its documents again."""
    bar = tqdm(
        total=len(state.pending[ingestion_id]), desc="ingesting", unit="doc", disable=not show_progress, file=sys.stderr
    )

    def on_progress(progress: retrieval_pb2.GetIngestionResponse) -> None:
        bar.update(progress.documents_done - bar.n)
        bar.set_postfix(chunks=progress.chunks_done)

    try:
        result = await client.wait_ingestion(ingestion_id, on_progress)
    except (RuntimeError, grpc.aio.AioRpcError) as error:
        if isinstance(error, RuntimeError) or error.code() == grpc.StatusCode.NOT_FOUND:
            state.pending.pop(ingestion_id, None)
            state.save()
        raise
    finally:
        bar.close()
    state.finish(ingestion_id)
    return result.chunks_done
