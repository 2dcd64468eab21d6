"""The stack against the gateway a user would otherwise run (LiteLLM -> llama-cpp-python), in the same run."""

import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import grpc
import numpy as np
from llmorch.internal.v1 import model_pb2, model_pb2_grpc
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2
from temporalio.api.enums.v1 import EventType

from model_svc.catalog import locate_weights
from tools.bench.load import LoadResult, closed_loop
from tools.bench.overhead import overhead_of
from tools.bench.realgen import MODEL_ID, REAL, median_of, rates, stack_once
from tools.stack import PEER_MODEL_NAME, Stack

SHORT_PROMPT = "Say hi."
LONG_PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."
LONG_TOKENS = 128
CONCURRENCIES = (1, 8, 32)
# stack: Envoy -> API -> workflow -> ModelService; peer: LiteLLM -> llama-cpp-python; *-direct: each side's engine
# server called directly (ModelService over gRPC, llama-cpp-python's server over HTTP).
PATHS = ("stack-direct", "stack", "peer-direct", "peer")
SIDES = {"stack": "stack-direct", "peer": "peer-direct"}
EVENTS_SAMPLE = 40


def chat_body(prompt: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    return {
        "model": PEER_MODEL_NAME,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "top_p": 0.95,
        "stream": stream,
    }


def stack_sampling(max_tokens: int) -> types_pb2.SamplingParams:
    return types_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0, top_p=0.95)


class Sides:
    """One connection pool per path, reused by every call, as a real client would."""

    def __init__(self, stack: Stack, http: aiohttp.ClientSession) -> None:
        self.http = http
        self.urls = stack.peer_urls
        self.headers = {"proxy": {"authorization": f"Bearer {stack.peer_key}"}, "engine": {}}
        self.channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{stack.model_ports[0]}"),
            stack.channel(),
        ]
        self.model = model_pb2_grpc.ModelServiceStub(self.channels[0])
        self.api = orchestrator_pb2_grpc.OrchestratorServiceStub(self.channels[1])
        self.workflow_ids: list[str] = []

    def peer_target(self, path: str) -> tuple[str, dict[str, str]]:
        which = "proxy" if path == "peer" else "engine"
        return f"{self.urls[which]}/chat/completions", self.headers[which]

    def short(self, path: str) -> Callable[[], Awaitable[None]]:
        if path == "stack-direct":
            direct = model_pb2.GenerateRequest(
                messages=[types_pb2.ChatMessage(role="user", content=SHORT_PROMPT)], sampling=stack_sampling(1)
            )

            async def model_call() -> None:
                await self.model.Generate(direct, timeout=60)

            return model_call
        if path == "stack":
            public = orchestrator_pb2.GenerateRequest(
                messages=[types_pb2.ChatMessage(role="user", content=SHORT_PROMPT)],
                model_id=MODEL_ID,
                sampling=stack_sampling(1),
            )

            async def api_call() -> None:
                reply = await self.api.Generate(public, timeout=60)
                self.workflow_ids.append(reply.provenance.workflow_id)

            return api_call
        url, headers = self.peer_target(path)
        body = chat_body(SHORT_PROMPT, 1, stream=False)

        async def http_call() -> None:
            async with self.http.post(url, json=body, headers=headers) as response:
                response.raise_for_status()
                await response.read()

        return http_call

    async def peer_stream(self, path: str) -> dict[str, Any]:
        """One streamed generation through an OpenAI-compatible server; llama-cpp-python sends a chunk per token."""
        url, headers = self.peer_target(path)
        started = time.perf_counter()
        first = end = 0.0
        chunks = 0
        async with self.http.post(url, json=chat_body(LONG_PROMPT, LONG_TOKENS, stream=True), headers=headers) as r:
            r.raise_for_status()
            async for data in server_sent_events(r.content):
                choices = json.loads(data).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    end = time.perf_counter()
                    first = first or end
                    chunks += 1
        return rates(started, first, end, chunks, chunks - 1)

    async def model_stream(self) -> dict[str, Any]:
        """One streamed generation from ModelService directly; each message names the tokens it carries."""
        request = model_pb2.GenerateStreamRequest(
            generation=model_pb2.GenerateRequest(
                messages=[types_pb2.ChatMessage(role="user", content=LONG_PROMPT)],
                sampling=stack_sampling(LONG_TOKENS),
            )
        )
        started = time.perf_counter()
        first = end = 0.0
        tokens = first_tokens = 0
        async for message in self.model.GenerateStream(request, timeout=300):
            if message.delta:
                end = time.perf_counter()
                if not first:
                    first, first_tokens = end, len(message.token_ids)
                tokens += len(message.token_ids)
        return rates(started, first, end, tokens, tokens - first_tokens)

    async def long(self, path: str) -> dict[str, Any]:
        if path == "stack":
            return await stack_once(self.api, LONG_PROMPT, LONG_TOKENS)
        if path == "stack-direct":
            return await self.model_stream()
        return await self.peer_stream(path)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


async def server_sent_events(content: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """The data of each server-sent event, line by line, up to OpenAI's closing [DONE]."""
    async for raw in content:
        line = raw.decode().strip()
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            yield line[5:].strip()


def side_of(name: str) -> str:
    """Which side a path or a process belongs to: the peer's are named peer*, the rest is the stack."""
    return "peer" if name.startswith("peer") else "stack"


def per_request(cpu_s: dict[str, float], requests: int) -> dict[str, float]:
    """CPU milliseconds per request of each process that used any while one path ran."""
    used = {name: seconds * 1000 / max(requests, 1) for name, seconds in cpu_s.items()}
    return {name: round(ms, 2) for name, ms in used.items() if ms >= 0.01}


async def level(stack: Stack, sides: Sides, concurrency: int, total: int, rounds: int) -> dict[str, Any]:
    """Rounds that rotate the paths, so drift in the machine's load hits every path alike; the CPU each process
    used is charged to the path that was running, with the load generator's own beside it."""
    merged = {path: LoadResult(concurrency) for path in PATHS}
    cpu: dict[str, dict[str, float]] = {path: {} for path in PATHS}
    for _ in range(rounds):
        for path in PATHS:
            before, generator = stack.cpu_seconds(), time.process_time()
            part = await closed_loop(sides.short(path), concurrency, requests=total // rounds)
            after = stack.cpu_seconds()
            after["load generator"] = before.get("load generator", 0.0) + time.process_time() - generator
            merged[path].latencies_ms += part.latencies_ms
            merged[path].errors.update(part.errors)
            merged[path].elapsed_s += part.elapsed_s
            for name, seconds in after.items():
                cpu[path][name] = cpu[path].get(name, 0.0) + seconds - before.get(name, 0.0)
    out: dict[str, Any] = {}
    for path, result in merged.items():
        per_process = per_request(cpu[path], result.ok)
        serving = {k: v for k, v in per_process.items() if k != "load generator" and side_of(k) == side_of(path)}
        out[path] = {
            **result.summary(),
            "cpu_ms_per_request": per_process,
            "cpu_ms_total": round(sum(serving.values()), 2),
        }
    out["overhead"] = {
        side: overhead_of(merged[side].latencies_ms, merged[direct].latencies_ms) for side, direct in SIDES.items()
    }
    return out


async def events_per_request(stack: Stack, workflow_ids: list[str]) -> dict[str, Any]:
    """History events of a sample of the stack's workflows: each one is a write the request paid for."""
    client = await stack.temporal_client()
    counts: list[int] = []
    by_type: dict[str, list[int]] = {}
    for workflow_id in workflow_ids[:EVENTS_SAMPLE]:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        counts.append(len(history.events))
        kinds: dict[str, int] = {}
        for event in history.events:
            name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
            kinds[name] = kinds.get(name, 0) + 1
        for name, count in kinds.items():
            by_type.setdefault(name, []).append(count)
    return {
        "workflows": len(counts),
        "median": float(np.median(counts)) if counts else 0.0,
        "by_type_median": {name: float(np.median(v)) for name, v in sorted(by_type.items())},
    }


def requests_for(concurrency: int, quick: bool) -> int:
    base = {1: 100, 8: 240, 32: 480}[concurrency]
    return base // 4 if quick else base


async def run(quick: bool) -> dict[str, Any]:
    weights = locate_weights(MODEL_ID)
    config = replace(REAL, peer_weights=weights, label="the stack as make up runs it, and the peer beside it")
    rounds = 2 if quick else 4
    reps = 2 if quick else 5
    async with Stack(config) as stack, aiohttp.ClientSession() as http:
        sides = Sides(stack, http)
        try:
            for path in PATHS:  # warm connections, caches, the prompt in each engine's cache
                await closed_loop(sides.short(path), 2, requests=10)
                await sides.long(path)
            sides.workflow_ids.clear()
            levels: dict[str, Any] = {}
            for concurrency in CONCURRENCIES:
                levels[str(concurrency)] = await level(
                    stack, sides, concurrency, requests_for(concurrency, quick), rounds
                )
                summary = {p: levels[str(concurrency)][p]["requests_per_s"] for p in PATHS}
                overhead = levels[str(concurrency)]["overhead"]
                print(f"  peer c={concurrency}: req/s {summary} overhead {overhead}", flush=True)
            short_events = await events_per_request(stack, sides.workflow_ids)
            sides.workflow_ids.clear()
            samples: dict[str, list[dict[str, Any]]] = {path: [] for path in PATHS}
            for _ in range(reps):  # alternate, as above; one generation at a time
                for path in PATHS:
                    samples[path].append(await sides.long(path))
            long_events = await events_per_request(stack, [row["workflow_id"] for row in samples["stack"]])
        finally:
            await sides.close()
    generation = {path: median_of(rows) for path, rows in samples.items()}
    return {
        "config": {
            "model": MODEL_ID,
            "weights": weights.name,
            "short_prompt": SHORT_PROMPT,
            "short_max_tokens": 1,
            "long_prompt": LONG_PROMPT,
            "long_max_tokens": LONG_TOKENS,
            "n_threads": REAL.peer_n_threads,
            "rounds": rounds,
            "generation_repetitions": reps,
            "paths": {
                "stack": "Envoy -> API Generate -> workflow -> generate activity -> ModelService (llama.cpp)",
                "stack-direct": "ModelService.Generate over gRPC, the same replica",
                "peer": "LiteLLM 1.106.2 proxy (master key) -> llama-cpp-python OpenAI server",
                "peer-direct": "llama-cpp-python OpenAI server over HTTP",
            },
            "overhead": "quantile of a side's latency minus the same quantile of its own direct call's",
            "cpu": "CPU of each process while that path ran, per request (idle processes' background work included)",
        },
        "levels": levels,
        "generation": generation,
        "events_per_request": {"short": short_events, "long": long_events},
        "ratios": ratios(levels, generation),
    }


def ratios(levels: dict[str, Any], generation: dict[str, Any]) -> dict[str, Any]:
    """Each stack figure over the peer's (and, for generation, over each side's own direct stream)."""
    out: dict[str, Any] = {}
    for concurrency, lv in levels.items():
        stack, peer = lv["overhead"]["stack"], lv["overhead"]["peer"]
        out[f"c{concurrency}"] = {
            "requests_per_s": round(lv["stack"]["requests_per_s"] / lv["peer"]["requests_per_s"], 3),
            "cpu_ms_total": round(lv["stack"]["cpu_ms_total"] / lv["peer"]["cpu_ms_total"], 3),
            **{q: round(stack[q] / peer[q], 2) if peer[q] > 0 else None for q in stack},
        }
    s, sd, p, pd = (generation[k] for k in ("stack", "stack-direct", "peer", "peer-direct"))
    out["generation"] = {
        "ttft_vs_peer": round(s["ttft_ms"] / p["ttft_ms"], 3),
        "tokens_per_s_vs_peer": round(s["generation_tokens_per_s"] / p["generation_tokens_per_s"], 3),
        "stack_tokens_per_s_vs_direct": round(s["generation_tokens_per_s"] / sd["generation_tokens_per_s"], 3),
        "peer_tokens_per_s_vs_direct": round(p["generation_tokens_per_s"] / pd["generation_tokens_per_s"], 3),
        "stack_ttft_minus_direct_ms": round(s["ttft_ms"] - sd["ttft_ms"], 2),
        "peer_ttft_minus_direct_ms": round(p["ttft_ms"] - pd["ttft_ms"], 2),
    }
    return out
