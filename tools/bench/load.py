"""Closed-loop load generation: N concurrent callers, each issuing its next call when the previous one returns."""

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

Call = Callable[[], Awaitable[Any]]


def cpu_ms_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """Each process's CPU milliseconds per request between two readings of its CPU seconds (Stack.cpu_seconds)."""
    return {name: (after[name] - before.get(name, 0.0)) * 1000 / max(requests, 1) for name in after}


@dataclass
class LoadResult:
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "requests": self.ok + sum(self.errors.values()),
            "ok": self.ok,
            "errors": dict(self.errors),
            "elapsed_s": round(self.elapsed_s, 3),
            "requests_per_s": round(self.throughput, 2),
            **percentiles(self.latencies_ms),
        }


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    return {
        "p50_ms": round(float(p50), 2),
        "p90_ms": round(float(p90), 2),
        "p99_ms": round(float(p99), 2),
        "mean_ms": round(float(np.mean(samples)), 2),
    }


async def closed_loop(
    call: Call, concurrency: int, requests: int | None = None, duration_s: float | None = None, warmup: int = 0
) -> LoadResult:
    """Run `requests` calls (or for `duration_s`) with `concurrency` callers; warm-up calls are not recorded."""
    for _ in range(warmup):
        await call()
    result = LoadResult(concurrency)
    remaining = [requests if requests is not None else 10**12]
    stop_at = time.perf_counter() + duration_s if duration_s else float("inf")

    async def caller() -> None:
        while remaining[0] > 0 and time.perf_counter() < stop_at:
            remaining[0] -= 1
            started = time.perf_counter()
            try:
                await call()
            except grpc.aio.AioRpcError as error:
                result.errors[error.code().name] += 1
                continue
            except Exception as error:  # counted, never fatal: a benchmark reports its errors
                result.errors[type(error).__name__] += 1
                continue
            result.latencies_ms.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - started
    return result
