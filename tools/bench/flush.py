"""The stream flush interval against TTFT, tokens/s, history events and CPU: SmolLM2 streaming through the stack."""

import time
from dataclasses import replace
from typing import Any

from llmorch.v1 import orchestrator_pb2_grpc

from model_svc.config import ModelSettings
from tools.bench.peer import events_per_request, per_request
from tools.bench.realgen import MODEL_ID, REAL, median_of, stack_once
from tools.stack import Stack, StackConfig

INTERVALS_S = (0.05, 0.1, 0.25, 0.5)
SHIPPED_S = ModelSettings.model_fields["stream_flush_interval_s"].default
LONG_TOKENS = 128


def with_interval(interval_s: float) -> StackConfig:
    (group,) = REAL.models
    settings = (*group.settings, ("stream_flush_interval_s", str(interval_s)))
    return replace(REAL, models=(replace(group, settings=settings),), label=f"flush every {interval_s} s")


async def one_interval(interval_s: float, reps: int) -> dict[str, Any]:
    """A stack per interval; the CPU of every process over the measured streams, per stream."""
    async with Stack(with_interval(interval_s)) as stack, stack.channel() as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        await stack_once(stub, max_tokens=LONG_TOKENS)  # warm-up
        before = stack.cpu_seconds()
        rows = [await stack_once(stub, max_tokens=LONG_TOKENS) for _ in range(reps)]
        after = stack.cpu_seconds()
        events = await events_per_request(stack, [row["workflow_id"] for row in rows])
    cpu = per_request({name: after[name] - before.get(name, 0.0) for name in after}, reps)
    # llama.cpp's own threads are the work itself; the rest is what streaming costs the control plane.
    control_plane = {name: ms for name, ms in cpu.items() if not name.startswith("model")}
    return {
        **median_of(rows),
        "history_events": events["median"],
        "cpu_ms_per_stream": cpu,
        "control_plane_cpu_ms_per_stream": round(sum(control_plane.values()), 1),
    }


async def run(quick: bool) -> dict[str, Any]:
    reps = 2 if quick else 5
    results = {}
    for interval_s in INTERVALS_S:
        started = time.perf_counter()
        results[str(interval_s)] = await one_interval(interval_s, reps)
        print(f"  flush {interval_s} s: {results[str(interval_s)]} ({time.perf_counter() - started:.0f} s)", flush=True)
    return {
        "config": {"model": MODEL_ID, "max_tokens": LONG_TOKENS, "repetitions": reps, "shipped_s": SHIPPED_S},
        "intervals": results,
    }


def table(results: dict[str, Any]) -> str:
    config = results["config"]
    lines = [
        f"{config['model']}, {config['max_tokens']} tokens, greedy, one stream at a time, median of "
        f"{config['repetitions']}; a fresh stack per interval (`MODEL_STREAM_FLUSH_INTERVAL_S`). The shipped default "
        f"is {config['shipped_s']} s. Control-plane CPU is every process but the model replica's, per stream.",
        "",
        "| flush interval (s) | TTFT ms | tokens/s after the first delta | engine tokens/s | stream messages | "
        "history events | control-plane CPU ms / stream |",
        "|---|---|---|---|---|---|---|",
    ]
    for interval, row in results["intervals"].items():
        lines.append(
            f"| {interval} | {row['ttft_ms']:.1f} | {row['generation_tokens_per_s']:.1f} | "
            f"{row['engine_tokens_per_s']:.1f} | {row['stream_messages']:.0f} | {row['history_events']:.0f} | "
            f"{row['control_plane_cpu_ms_per_stream']:.1f} |"
        )
    return "\n".join(lines)
