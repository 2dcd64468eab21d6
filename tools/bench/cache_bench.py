"""The optional Redis cache (ADR 0017): latency of a cached answer against a generated one, and embedding throughput
with a warm cache against a cold one, through Envoy on the stack `make up REDIS=1` runs (real models).

python -m tools.bench.cache_bench [--out DIR] [--requests N]   (make bench writes docs/benchmarks/cache.{json,md})
"""

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from llmorch_client.client import OrchestratorClient, question_request
from llmorch_common.constants import DEFAULT_MODEL_ID
from tools.bench import machine
from tools.bench.load import percentiles
from tools.bench.report import table
from tools.stack import ModelGroup, Stack, StackConfig

EMBED_BATCH = 64
EMBED_ROUNDS = 4


async def timed_generate(client: OrchestratorClient, question: str) -> tuple[float, str]:
    started = time.perf_counter()
    reply = await client.generate(question_request(question, max_tokens=32, seed=1))
    return (time.perf_counter() - started) * 1000, reply.provenance.cache


async def measure(stack: Stack, requests: int) -> dict[str, Any]:
    questions = [f"Name a colour ({uuid.uuid4().hex[:6]})." for _ in range(requests)]
    texts = [f"sentence {i} about {uuid.uuid4().hex}" for i in range(EMBED_BATCH * EMBED_ROUNDS)]
    async with OrchestratorClient(stack.envoy_target, stack.api_key) as client:
        misses = [await timed_generate(client, q) for q in questions]
        hits = [await timed_generate(client, q) for q in questions]
        assert {c for _, c in misses} == {"miss"} and {c for _, c in hits} == {"hit"}, (misses, hits)
        throughput = {}
        for label in ("cold", "warm"):  # the same texts twice: every one a miss, then every one a hit
            started = time.perf_counter()
            for start in range(0, len(texts), EMBED_BATCH):
                await client.embed(texts[start : start + EMBED_BATCH])
            throughput[label] = round(len(texts) / (time.perf_counter() - started), 1)
    return {
        "completion_miss": percentiles([ms for ms, _ in misses]),
        "completion_hit": percentiles([ms for ms, _ in hits]),
        "embedding_texts_per_s": throughput,
        "requests": requests,
        "embedding_texts": len(texts),
        "embedding_batch": EMBED_BATCH,
    }


def markdown(results: dict[str, Any]) -> str:
    miss, hit = results["completion_miss"], results["completion_hit"]
    rows = [
        ["generated (cache miss)", miss["p50_ms"], miss["p90_ms"], miss["mean_ms"]],
        ["cached (cache hit)", hit["p50_ms"], hit["p90_ms"], hit["mean_ms"]],
    ]
    embed = results["embedding_texts_per_s"]
    return (
        "\n\n".join(
            [
                "# Cache: hit against miss",
                machine.markdown(results["machine"]),
                f"{results['requests']} deterministic requests (seed 1, up to 32 tokens) to {DEFAULT_MODEL_ID} through "
                "Envoy, each asked twice: the first run generates and stores, the second is served from Redis by the "
                "workflow's local activity. Data in [cache.json](cache.json).",
                table(["request", "p50 ms", "p90 ms", "mean ms"], rows),
                f"Embeddings: {results['embedding_texts']} texts in batches of {results['embedding_batch']} "
                "through the public Embed, twice.",
                table(["cache", "texts/s"], [["cold (every text embedded)", embed["cold"]], ["warm", embed["warm"]]]),
            ]
        )
        + "\n"
    )


async def run(requests: int) -> dict[str, Any]:
    config = StackConfig(models=(ModelGroup(DEFAULT_MODEL_ID),), embed=True, redis=True)
    async with Stack(config) as stack:
        return await measure(stack, requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    results = {"machine": machine.describe(sys.argv[1:], "tools.bench.cache_bench"), **asyncio.run(run(args.requests))}
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cache.json").write_text(json.dumps(results, indent=1) + "\n")
        (args.out / "cache.md").write_text(markdown(results))


if __name__ == "__main__":
    main()
