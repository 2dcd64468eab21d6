"""Overhead of the durable path: Envoy -> API -> workflow -> model activity -> ModelService against a direct
ModelService call, with the fake engine at a fixed latency; and the dispatch breakdown from workflow histories."""

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import grpc
import numpy as np
from llmorch.internal.v1 import model_pb2, model_pb2_grpc
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tools.bench.load import LoadResult, closed_loop, cpu_ms_per_request, percentiles
from tools.stack import Stack, StackConfig, fake_stack, temporal_settings

PROMPT = "Say hello."
MAX_TOKENS = 4
FIRST_TOKEN_MS = 20.0
TOKEN_MS = 2.0
CONCURRENCIES = (1, 8, 32)
PATHS = ("direct", "api", "envoy")
MAX_CONCURRENCY = 32
BASE = fake_stack(max_concurrency=MAX_CONCURRENCY, first_token_ms=FIRST_TOKEN_MS, token_ms=TOKEN_MS)

# Dev-server variants measured at concurrency 1 (each on a fresh stack).
VARIANTS: dict[str, StackConfig] = {
    "server-default-poll-rate": replace(
        BASE, temporal_tuned=False, label="transfer queue read at the dev server's default 20/s (no tuning)"
    ),
    "rollback-journal": replace(
        BASE, temporal_wal=False, label="SQLite's default rollback journal instead of its write-ahead log"
    ),
    "in-memory": replace(
        BASE, temporal_in_memory=True, label="dev server's in-memory store instead of its SQLite file"
    ),
    "update-with-start": replace(
        BASE,
        orchestrator_env=(("ORCH_RESULT_VIA_UPDATE", "true"),),
        label="update-with-start, answered once the result is recorded (no eager start), instead of eager start "
        "and result()",
    ),
}


def sampling() -> types_pb2.SamplingParams:
    return types_pb2.SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0)


class Targets:
    """One channel per path, reused by every call, as a real client would."""

    def __init__(self, stack: Stack) -> None:
        self.channels = [grpc.aio.insecure_channel(f"127.0.0.1:{stack.model_ports[0]}")]
        self.model = model_pb2_grpc.ModelServiceStub(self.channels[0])
        self.apis: dict[str, orchestrator_pb2_grpc.OrchestratorServiceStub] = {}
        self.workflows: dict[str, list[str]] = {"api": [], "envoy": []}
        for path, target in (("api", stack.api_target), ("envoy", stack.envoy_target)):
            if path == "envoy" and not stack.config.envoy:
                continue
            channel = stack.channel(target)
            self.channels.append(channel)
            self.apis[path] = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)

    def call(self, path: str) -> Callable[[], Awaitable[Any]]:
        if path == "direct":
            request = model_pb2.GenerateRequest(prompt=PROMPT, sampling=sampling())

            async def direct() -> None:
                await self.model.Generate(request, timeout=60)

            return direct
        stub, ids = self.apis[path], self.workflows[path]
        public = orchestrator_pb2.GenerateRequest(prompt=PROMPT, sampling=sampling())

        async def through_stack() -> None:
            reply = await stub.Generate(public, timeout=60)
            ids.append(reply.provenance.workflow_id)

        return through_stack

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


def requests_for(concurrency: int, quick: bool, scale: float = 1.0) -> int:
    base = int({1: 300, 8: 480, 32: 960}[concurrency] * scale)
    return base // 5 if quick else base


async def interleaved(targets: Targets, paths: tuple[str, ...], concurrency: int, total: int) -> dict[str, LoadResult]:
    """Rounds that rotate the paths, so drift in the machine's load hits every path alike."""
    rounds = 4
    merged = {path: LoadResult(concurrency) for path in paths}
    for _ in range(rounds):
        for path in paths:
            part = await closed_loop(targets.call(path), concurrency, requests=total // rounds)
            merged[path].latencies_ms += part.latencies_ms
            merged[path].errors.update(part.errors)
            merged[path].elapsed_s += part.elapsed_s
    return merged


def overhead_of(stack_ms: list[float], direct_ms: list[float]) -> dict[str, float]:
    """Quantile of the stack's latency minus the same quantile of the direct call's."""
    q = [50, 90, 99]
    through, direct = np.percentile(stack_ms, q), np.percentile(direct_ms, q)
    return {f"p{p}_ms": round(float(a - b), 2) for p, a, b in zip(q, through, direct, strict=True)}


async def measure(stack: Stack, concurrencies: tuple[int, ...], quick: bool, scale: float = 1.0) -> dict[str, Any]:
    targets = Targets(stack)
    paths = tuple(p for p in PATHS if p == "direct" or p in targets.apis)
    try:
        for path in paths:  # warm channels, the worker's sticky cache and the registry's listing
            await closed_loop(targets.call(path), 4, requests=20)
        for ids in targets.workflows.values():
            ids.clear()
        levels: dict[str, Any] = {}
        workflow_ids: dict[str, list[str]] = {}
        for concurrency in concurrencies:
            results = await interleaved(targets, paths, concurrency, requests_for(concurrency, quick, scale))
            level: dict[str, Any] = {path: result.summary() for path, result in results.items()}
            level["overhead"] = {
                path: overhead_of(results[path].latencies_ms, results["direct"].latencies_ms)
                for path in paths
                if path != "direct"
            }
            if "envoy" in results and "api" in results:
                level["envoy_cost"] = overhead_of(results["envoy"].latencies_ms, results["api"].latencies_ms)
            levels[str(concurrency)] = level
            workflow_ids[str(concurrency)] = list(targets.workflows.get("envoy") or targets.workflows["api"])
            for ids in targets.workflows.values():
                ids.clear()
            print(f"  overhead c={concurrency}: {level['overhead']}", flush=True)
    finally:
        await targets.close()
    return {"levels": levels, "workflow_ids": workflow_ids}


# --- dispatch breakdown from workflow histories -------------------------------------------------------------

SEGMENTS = (
    ("first_wft_dispatch", "first workflow task: scheduled -> started (dispatch)"),
    ("first_wft_run", "first workflow task: started -> completed (schedule generate; the API chose the model)"),
    ("activity_dispatch", "generate activity: scheduled -> started (dispatch to llm.<model>)"),
    ("activity_run", "generate activity: started -> completed (ModelService call)"),
    ("second_wft_dispatch", "second workflow task: scheduled -> started (sticky queue)"),
    ("second_wft_run", "second workflow task: started -> completed"),
    ("workflow_total", "workflow: execution started -> completed"),
)


def breakdown(events: list[Any]) -> dict[str, float]:
    """Milliseconds per segment of one InferenceWorkflow history (unary, no RAG)."""

    def at(event: Any) -> float:
        return float(event.event_time.ToMicroseconds()) / 1000

    times: dict[str, list[float]] = {}
    for event in events:
        times.setdefault(EventType.Name(event.event_type), []).append(at(event))
    scheduled = times.get("EVENT_TYPE_WORKFLOW_TASK_SCHEDULED", [])
    started = times.get("EVENT_TYPE_WORKFLOW_TASK_STARTED", [])
    completed = times.get("EVENT_TYPE_WORKFLOW_TASK_COMPLETED", [])
    out: dict[str, float] = {"workflow_tasks": float(len(completed))}
    if len(scheduled) >= 2 and len(started) >= 2 and len(completed) >= 2:
        out["first_wft_dispatch"] = started[0] - scheduled[0]
        out["first_wft_run"] = completed[0] - started[0]
        out["second_wft_dispatch"] = started[-1] - scheduled[-1]
        out["second_wft_run"] = completed[-1] - started[-1]
    act_s = times.get("EVENT_TYPE_ACTIVITY_TASK_SCHEDULED", [])
    act_b = times.get("EVENT_TYPE_ACTIVITY_TASK_STARTED", [])
    act_c = times.get("EVENT_TYPE_ACTIVITY_TASK_COMPLETED", [])
    if act_s and act_b and act_c:
        out["activity_dispatch"] = act_b[-1] - act_s[-1]
        out["activity_run"] = act_c[-1] - act_b[-1]
    begin = times.get("EVENT_TYPE_WORKFLOW_EXECUTION_STARTED", [])
    end = times.get("EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED", [])
    if begin and end:
        out["workflow_total"] = end[0] - begin[0]
    return out


async def dispatch_from_histories(temporal_address: str, workflow_ids: list[str], limit: int = 150) -> dict[str, Any]:
    client = await Client.connect(temporal_address)
    rows = []
    for workflow_id in workflow_ids[:limit]:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        rows.append(breakdown(list(history.events)))
    summary: dict[str, Any] = {"workflows": len(rows)}
    for key, _ in SEGMENTS:
        values = [row[key] for row in rows if key in row]
        if values:
            summary[key] = percentiles(values)
    tasks = [row["workflow_tasks"] for row in rows]
    summary["workflow_tasks_per_request"] = float(np.median(tasks)) if tasks else 0.0
    return summary


async def run(quick: bool) -> dict[str, Any]:
    async with Stack(BASE) as stack:
        main = await measure(stack, CONCURRENCIES, quick)
        ids = main.pop("workflow_ids")
        dispatch = {level: await dispatch_from_histories(stack.temporal_address, ids[level]) for level in ids}
    return {
        "config": {
            "fake_first_token_ms": FIRST_TOKEN_MS,
            "fake_token_ms": TOKEN_MS,
            "max_tokens": MAX_TOKENS,
            "max_concurrency": MAX_CONCURRENCY,
            "temporal": "dev server on its SQLite file, as `make up` runs it",
            "overhead": "quantile of the stack path's latency minus the same quantile of the direct call's",
        },
        **main,
        "dispatch": dispatch,
    }


SATURATING_CALLERS = 8


async def saturated(stack: Stack, quick: bool) -> dict[str, Any]:
    """Requests per second and every process's CPU per request with 8 callers on the API path: what a setting
    costs once the machine, not the dispatch, is the limit."""
    targets = Targets(stack)
    try:
        before = stack.cpu_seconds()
        result = await closed_loop(targets.call("api"), SATURATING_CALLERS, requests=80 if quick else 240)
        after = stack.cpu_seconds()
    finally:
        await targets.close()
    cpu = {name: round(ms, 2) for name, ms in cpu_ms_per_request(before, after, result.ok).items()}
    return {**result.summary(), "cpu_ms_per_request": cpu, "cpu_ms_total": round(sum(cpu.values()), 2)}


async def run_dispatch(quick: bool) -> dict[str, Any]:
    """Workflow-task and activity dispatch latency of the dev server, and what its settings change (concurrency 1)."""
    variants: dict[str, Any] = {}
    for name, config in {
        "default": replace(BASE, label="the dev server as `make up` runs it"),
        **VARIANTS,
    }.items():
        async with Stack(replace(config, envoy=False)) as stack:
            measured = await measure(stack, (1,), quick, scale=0.5)
            ids = measured.pop("workflow_ids")
            measured["dispatch"] = await dispatch_from_histories(stack.temporal_address, ids["1"])
            measured["saturated"] = await saturated(stack, quick)
        measured["label"] = config.label
        measured["temporal_args"] = list(temporal_settings(config, "<file>"))
        variants[name] = measured
        first = measured["dispatch"].get("first_wft_dispatch", {})
        print(f"  dispatch {name}: first workflow task {first}", flush=True)
    from tools.bench import temporal_micro

    return {"variants": variants, "minimal_workflow": await temporal_micro.run(quick)}
