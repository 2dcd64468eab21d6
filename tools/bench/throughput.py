"""Throughput: short requests as concurrency rises until saturation, and scaling with fake-model replicas."""

import time
from dataclasses import replace
from itertools import pairwise
from typing import Any

from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

from tools.bench.load import closed_loop, cpu_ms_per_request
from tools.stack import Stack, fake_stack, replicated

# Short requests: one token after 1 ms, so the orchestrator, not the model, is what is measured.
SHORT_FIRST_TOKEN_MS = 1.0
SHORT = fake_stack(max_concurrency=64, first_token_ms=SHORT_FIRST_TOKEN_MS, token_ms=0.0)
RAMP = (1, 4, 8, 16, 32, 64)
QUICK_RAMP = (1, 8, 32)
# Replica scaling: fixed 200 ms per request and 4 slots per replica; ideal = replicas * 4 / 0.2 s.
SCALING_LATENCY_MS = 200.0
SCALING_SLOTS = 4
REPLICAS = (1, 2, 4)
# 2: two API replicas and two workers behind Envoy, the registry on PostgreSQL, as `make up REPLICAS=2` runs them.
API_REPLICAS = (1, 2)
CLIENTS_PER_SLOT = 3  # enough callers that the queue never runs dry while requests are outside their slot


def short_request() -> orchestrator_pb2.GenerateRequest:
    return orchestrator_pb2.GenerateRequest(
        prompt="ping", sampling=types_pb2.SamplingParams(max_tokens=1, temperature=0.0)
    )


async def drive(
    stack: Stack, concurrency: int, duration_s: float, warmup_s: float, measure_cpu: bool = True
) -> dict[str, Any]:
    """Closed-loop load through the stack's Envoy; with `measure_cpu`, each process's CPU per request too."""
    async with stack.channel() as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        request = short_request()

        async def call() -> None:
            await stub.Generate(request, timeout=120)

        if warmup_s:
            await closed_loop(call, concurrency, duration_s=warmup_s)
        before = stack.cpu_seconds() if measure_cpu else {}
        load_before = time.process_time()
        result = await closed_loop(call, concurrency, duration_s=duration_s)
        summary = result.summary()
        if measure_cpu and result.ok:
            after = stack.cpu_seconds()
            cpu = cpu_ms_per_request(before, after, result.ok)
            cpu["load generator"] = (time.process_time() - load_before) * 1000 / result.ok
            summary["cpu_ms_per_request"] = {name: round(ms, 2) for name, ms in cpu.items()}
            summary["cpu_cores_busy"] = round(sum(cpu.values()) * result.ok / 1000 / result.elapsed_s, 2)
        return summary


async def ramp(quick: bool) -> dict[str, Any]:
    levels = []
    async with Stack(SHORT) as stack:
        await drive(stack, 4, 3.0, 0, measure_cpu=False)  # warm every process's caches
        for concurrency in QUICK_RAMP if quick else RAMP:
            level = await drive(stack, concurrency, 4.0 if quick else 10.0, 1.0)
            levels.append(level)
            print(f"  ramp c={concurrency}: {level['requests_per_s']} req/s, errors {level['errors']}", flush=True)
    best = max(levels, key=lambda level: level["requests_per_s"])
    # Saturation: the first level past which more callers add less than 5% throughput.
    saturation = levels[-1]
    for previous, current in pairwise(levels):
        if current["requests_per_s"] < previous["requests_per_s"] * 1.05:
            saturation = previous
            break
    return {
        "config": {"fake_first_token_ms": SHORT_FIRST_TOKEN_MS, "max_tokens": 1, "path": "Envoy -> API"},
        "levels": levels,
        "peak_requests_per_s": best["requests_per_s"],
        "peak_concurrency": best["concurrency"],
        "saturation_concurrency": saturation["concurrency"],
        "errors": sum(sum(level["errors"].values()) for level in levels),
    }


async def scaling(quick: bool) -> dict[str, Any]:
    rows = []
    for api_replicas in API_REPLICAS:
        for replicas in REPLICAS:
            config = fake_stack(
                replicas=replicas, max_concurrency=SCALING_SLOTS, first_token_ms=SCALING_LATENCY_MS, token_ms=0.0
            )
            async with Stack(replicated(config, api_replicas)) as stack:
                clients = replicas * SCALING_SLOTS * CLIENTS_PER_SLOT
                level = await drive(stack, clients, 6.0 if quick else 15.0, 3.0)
            ideal = replicas * SCALING_SLOTS * 1000 / SCALING_LATENCY_MS
            level.update(
                replicas=replicas,
                api_replicas=api_replicas,
                ideal_requests_per_s=ideal,
                efficiency=round(level["requests_per_s"] / ideal, 3),
            )
            rows.append(level)
            print(
                f"  scaling {replicas} replica(s), {api_replicas} API: {level['requests_per_s']} / {ideal} req/s",
                flush=True,
            )
    return {
        "config": {
            "fake_first_token_ms": SCALING_LATENCY_MS,
            "max_concurrency_per_replica": SCALING_SLOTS,
            "clients_per_slot": CLIENTS_PER_SLOT,
            "path": "Envoy -> API",
        },
        "rows": rows,
    }


WORKER_VARIANTS = {
    "workflow sandbox on": replace(SHORT, orchestrator_env=(("ORCH_WORKFLOW_SANDBOX", "true"),)),
    "workflow sandbox off (as shipped)": replace(SHORT, orchestrator_env=(("ORCH_WORKFLOW_SANDBOX", "false"),)),
}
WORKER_VARIANT_CONCURRENCY = 16


async def worker_variants(quick: bool) -> list[dict[str, Any]]:
    """The workflow sandbox is a large share of the workflow runner's CPU per request; measure it on and off."""
    rows = []
    for label, config in WORKER_VARIANTS.items():
        async with Stack(config) as stack:
            await drive(stack, 4, 2.0, 0, measure_cpu=False)
            level = await drive(stack, WORKER_VARIANT_CONCURRENCY, 5.0 if quick else 10.0, 1.0)
        level["variant"] = label
        rows.append(level)
        print(f"  worker {label}: {level['requests_per_s']} req/s, cpu {level.get('cpu_ms_per_request')}", flush=True)
    return rows


async def run(quick: bool) -> dict[str, Any]:
    return {"ramp": await ramp(quick), "scaling": await scaling(quick), "worker_variants": await worker_variants(quick)}
