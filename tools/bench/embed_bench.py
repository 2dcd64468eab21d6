"""Benchmark embedding throughput (engine vs gRPC) and vector-store query latency and ANN recall at 1k-100k chunks."""

import argparse
import asyncio
import json
import pydoc_data.topics
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from llmorch.internal.v1 import embedding_pb2, embedding_pb2_grpc

from embed_svc.config import EmbedSettings
from embed_svc.gguf_convert import DEFAULT_OUTPUT, ensure_minilm_gguf
from embed_svc.replica import EmbedReplica
from orchestrator_svc.retrieval.chunking import chunk_text
from orchestrator_svc.retrieval.vectorstore import ChunkRecord, VectorStore, open_store
from orchestrator_svc.retrieval.vectorstore.lancedb_store import LanceDbStore

SIZES = (1_000, 10_000, 100_000)
DIMENSION = 384
QUERIES = 30
TOP_K = 10
EMBED_TEXTS = 192
GRPC_BATCH = 64
DOCUMENT_CHUNKS = 5_000


def corpus_texts(count: int) -> list[str]:
    """Real ~800-character chunks of the Python Language Reference, as RAG ingestion embeds them."""
    texts: list[str] = []
    for topic, body in sorted(pydoc_data.topics.topics.items()):
        texts.extend(chunk.text for chunk in chunk_text(topic, body))
        if len(texts) >= count:
            break
    return texts[:count]


async def bench_embedding(model_path: Path) -> dict[str, Any]:
    settings = EmbedSettings(
        port=0, host="127.0.0.1", metrics_port=0, registry_address="", drain_timeout_s=1.0, model_path=str(model_path)
    )
    # Served and loaded but never polling or registered: the bench calls the service, not the queue.
    replica = EmbedReplica(settings)
    await replica.serve()
    await replica.load()
    engine = replica.app.servicer.engine
    assert engine is not None
    texts = corpus_texts(EMBED_TEXTS)
    await engine.embed(texts[:8])  # warm-up
    started = time.perf_counter()
    direct = await engine.embed(texts)
    direct_s = time.perf_counter() - started
    tokens = sum(direct.token_counts)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}") as channel:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        started = time.perf_counter()
        for start in range(0, len(texts), GRPC_BATCH):
            await stub.Embed(embedding_pb2.EmbedRequest(texts=texts[start : start + GRPC_BATCH]), timeout=300)
        grpc_s = time.perf_counter() - started
    await replica.drain()
    return {
        "texts": len(texts),
        "tokens": tokens,
        "direct": {"seconds": direct_s, "texts_per_s": len(texts) / direct_s, "tokens_per_s": tokens / direct_s},
        "grpc": {
            "seconds": grpc_s,
            "batch": GRPC_BATCH,
            "texts_per_s": len(texts) / grpc_s,
            "tokens_per_s": tokens / grpc_s,
        },
    }


def clustered_vectors(rng: np.random.Generator, count: int) -> npt.NDArray[np.float32]:
    """Vectors around random centres, closer to sentence embeddings than uniform noise."""
    centres = rng.normal(size=(200, DIMENSION))
    return (centres[rng.integers(0, 200, count)] + 0.7 * rng.normal(size=(count, DIMENSION))).astype(np.float32)


async def fill(store: VectorStore, vectors: npt.NDArray[np.float32]) -> float:
    await store.create_collection("bench", DIMENSION)
    started = time.perf_counter()
    for start in range(0, len(vectors), DOCUMENT_CHUNKS):
        doc = f"doc{start // DOCUMENT_CHUNKS}"
        records = [
            ChunkRecord(f"{doc}#{i}", f"chunk {start + i}", vector.tolist())
            for i, vector in enumerate(vectors[start : start + DOCUMENT_CHUNKS])
        ]
        await store.upsert_document("bench", doc, records)
    return time.perf_counter() - started


async def latencies(
    search: Callable[[list[float]], Awaitable[Any]], queries: npt.NDArray[np.float32]
) -> dict[str, float]:
    await search(queries[0].tolist())  # warm caches (sqlite's matrix, lancedb's index) outside the timing
    samples = []
    for query in queries:
        started = time.perf_counter()
        await search(query.tolist())
        samples.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": statistics.median(samples), "p95_ms": float(np.percentile(samples, 95))}


async def bench_store(
    kind: str, size: int, vectors: npt.NDArray[np.float32], queries: npt.NDArray[np.float32], root: Path
) -> dict[str, Any]:
    # The lancedb threshold is out of reach during the load so the index is built once, and timed on its own.
    store = await open_store(kind, root / f"{kind}-{size}", index_threshold=10**9)  # type: ignore[arg-type]
    result: dict[str, Any] = {"load_s": await fill(store, vectors)}
    result["exact"] = await latencies(lambda q: store.query("bench", q, TOP_K, exact=True), queries)
    if isinstance(store, LanceDbStore):
        started = time.perf_counter()
        await store.build_index("bench")
        result["index_build_s"] = time.perf_counter() - started
        result["ann"] = await latencies(lambda q: store.query("bench", q, TOP_K), queries)
        recalls = []
        for query in queries:
            exact = {h.id for h in await store.query("bench", query.tolist(), TOP_K, exact=True)}
            approximate = {h.id for h in await store.query("bench", query.tolist(), TOP_K)}
            recalls.append(len(exact & approximate) / TOP_K)
        result["ann_recall_at_10"] = float(np.mean(recalls))
    await store.close()
    return result


async def bench_stores(root: Path) -> dict[str, Any]:
    rng = np.random.default_rng(42)
    all_vectors = clustered_vectors(rng, max(SIZES))
    queries = clustered_vectors(rng, QUERIES)
    results: dict[str, Any] = {}
    for size in SIZES:
        for kind in ("memory", "sqlite", "lancedb"):
            results.setdefault(kind, {})[str(size)] = await bench_store(kind, size, all_vectors[:size], queries, root)
            print(f"{kind} {size}: {results[kind][str(size)]}", flush=True)
    return results


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    embedding = results["embedding"]
    left.bar(
        ["engine", f"gRPC (batch {GRPC_BATCH})"], [embedding["direct"]["texts_per_s"], embedding["grpc"]["texts_per_s"]]
    )
    left.set_ylabel("texts / s (~800-char chunks)")
    left.set_title("MiniLM-L6-v2 embedding throughput")
    sizes = list(SIZES)
    series = [
        ("memory exact", "memory", "exact"),
        ("sqlite exact", "sqlite", "exact"),
        ("lancedb exact", "lancedb", "exact"),
        ("lancedb ANN", "lancedb", "ann"),
    ]
    for label, kind, mode in series:
        right.plot(sizes, [results["stores"][kind][str(s)][mode]["p50_ms"] for s in sizes], marker="o", label=label)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("chunks in collection")
    right.set_ylabel("query p50 latency (ms), top-10")
    recalls = ", ".join(f"{s // 1000}k: {results['stores']['lancedb'][str(s)]['ann_recall_at_10']:.2f}" for s in sizes)
    right.set_title(f"Vector search (ANN recall@10 {recalls})", fontsize=9)
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def run(out_dir: Path) -> dict[str, Any]:
    """Measure, then write embed_bench.json and embed_bench.png into out_dir; returns the results."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = ensure_minilm_gguf(DEFAULT_OUTPUT)
    started = time.perf_counter()
    results: dict[str, Any] = {"embedding": asyncio.run(bench_embedding(model_path))}
    print(f"embedding: {results['embedding']}", flush=True)
    with tempfile.TemporaryDirectory() as root:
        results["stores"] = asyncio.run(bench_stores(Path(root)))
    results["total_s"] = time.perf_counter() - started
    (out_dir / "embed_bench.json").write_text(json.dumps(results, indent=2))
    plot(results, out_dir / "embed_bench.png")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="directory for JSON and PNG")
    run(parser.parse_args().out)
