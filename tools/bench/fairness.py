"""Latency behind a saturated queue, with Temporal's fairness on (the stack as `make up` runs it) and off.

One fake-engine model serves one request at a time, 100 ms each. Tenant A queues a backlog; then tenant B sends a
few requests, and A's interactive requests arrive behind a batch backlog. Writes fairness.json and fairness.md.

python -m tools.bench.fairness [--out docs/benchmarks] [--backlog 100]
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

from llmorch_common.constants import DEFAULT_MODEL_ID, llm_task_queue
from orchestrator_svc.registry.queue_stats import QueueStats
from tools.bench import machine
from tools.stack import Stack, create_key, fake_stack

LATE = 10


def request(batch: bool) -> orchestrator_pb2.GenerateRequest:
    klass = orchestrator_pb2.PRIORITY_CLASS_BATCH if batch else orchestrator_pb2.PRIORITY_CLASS_INTERACTIVE
    return orchestrator_pb2.GenerateRequest(
        request_id=uuid.uuid4().hex, prompt="Go.", sampling=types_pb2.SamplingParams(max_tokens=1), priority_class=klass
    )


async def timed(stub: orchestrator_pb2_grpc.OrchestratorServiceStub, batch: bool) -> float:
    started = time.perf_counter()
    await stub.Generate(request(batch), timeout=900)
    return (time.perf_counter() - started) * 1000


def summary(latencies_ms: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[max(0, round(0.95 * len(ordered)) - 1)], 1),
        "max_ms": round(ordered[-1], 1),
    }


async def late_arrivals(stack: Stack, backlog: int, late_tenant: str, late_batch: bool) -> dict[str, Any]:
    """`backlog` batch requests of tenant A, then LATE requests of `late_tenant`: their latencies, and A's."""
    a_key = await create_key(stack.database_url, "tenant-a")
    late_key = a_key if late_tenant == "tenant-a" else await create_key(stack.database_url, late_tenant)
    async with stack.channel(api_key=a_key) as a_channel, stack.channel(api_key=late_key) as late_channel:
        a = orchestrator_pb2_grpc.OrchestratorServiceStub(a_channel)
        late = orchestrator_pb2_grpc.OrchestratorServiceStub(late_channel)
        backlog_calls = [asyncio.ensure_future(timed(a, batch=True)) for _ in range(backlog)]
        stats = QueueStats(await stack.temporal_client())
        deadline = time.monotonic() + 60
        queue = llm_task_queue(DEFAULT_MODEL_ID)
        while (await stats.load(queue)).backlog < backlog * 0.6 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        late_latencies = await asyncio.gather(*(timed(late, late_batch) for _ in range(LATE)))
        backlog_latencies = await asyncio.gather(*backlog_calls)
    return {"late": summary(list(late_latencies)), "backlog": summary(list(backlog_latencies))}


async def scenario(fairness: bool, backlog: int) -> dict[str, Any]:
    config = fake_stack(max_concurrency=1, first_token_ms=100.0, token_ms=1.0)
    config = replace(config, temporal_fairness=fairness, embed=False)
    async with Stack(config) as stack:
        return {
            # Same class as the backlog, so only fairness can let B through.
            "another tenant's batch behind A's batch": await late_arrivals(stack, backlog, "tenant-b", late_batch=True),
            "A's interactive behind A's batch": await late_arrivals(stack, backlog, "tenant-a", late_batch=False),
        }


def markdown(results: dict[str, Any], backlog: int) -> str:
    lines = [
        "# Fairness and priority under saturation",
        "",
        "Written by `python -m tools.bench.fairness` (part of `make bench`) into fairness.json.",
        "",
        machine.markdown(results["machine"]),
        "",
        f"One fake-engine model, max_concurrency 1, 100 ms a request; tenant A queues {backlog} batch requests, "
        f"then {LATE} late requests arrive: tenant B's batch requests (only fairness can let them through) or A's "
        f"own interactive ones (priority). Latency of the {LATE} late ones and of A's backlog, with Temporal's "
        "fairness on (as `make up` runs it) and off (priority keys still apply).",
        "",
        "| scenario | fairness | late p50 ms | late p95 ms | late max ms | backlog p50 ms | backlog max ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in ("on", "off"):
        for name, row in results[mode].items():
            late, held = row["late"], row["backlog"]
            lines.append(
                f"| {name} | {mode} | {late['p50_ms']} | {late['p95_ms']} | {late['max_ms']} | "
                f"{held['p50_ms']} | {held['max_ms']} |"
            )
    return "\n".join(lines) + "\n"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--backlog", type=int, default=100)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "machine": machine.describe(sys.argv[1:], "tools.bench.fairness"),
        "backlog": args.backlog,
    }
    for mode, fairness in (("on", True), ("off", False)):
        results[mode] = await scenario(fairness, args.backlog)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fairness.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "fairness.md").write_text(markdown(results, args.backlog))
    print(markdown(results, args.backlog))


if __name__ == "__main__":
    asyncio.run(main())
