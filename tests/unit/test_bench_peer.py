"""The peer section of the bench without servers: its stream parsing, CPU attribution, ratios and report."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tools.bench import peer, report


async def _lines(*lines: bytes) -> AsyncIterator[bytes]:
    for line in lines:
        yield line


def test_server_sent_events_yield_each_data_line_until_done() -> None:
    async def collect() -> list[str]:
        stream = _lines(b'data: {"a": 1}\n', b"\n", b": keep-alive\n", b'data:{"b": 2}\r\n', b"data: [DONE]\n")
        return [data async for data in peer.server_sent_events(stream)]

    assert asyncio.run(collect()) == ['{"a": 1}', '{"b": 2}']


def test_cpu_is_charged_per_request_and_to_its_own_side() -> None:
    assert [peer.side_of(name) for name in ("peer", "peer-direct", "peer-proxy", "stack", "api", "model")] == [
        "peer", "peer", "peer", "stack", "stack", "stack",
    ]  # fmt: skip
    assert peer.per_request({"api": 0.5, "temporal": 1.0, "idle": 0.000001}, 100) == {"api": 5.0, "temporal": 10.0}


def _level(stack_rps: float, peer_rps: float, stack_over: float, peer_over: float) -> dict[str, Any]:
    def path(rps: float, cpu: float) -> dict[str, Any]:
        return {"requests_per_s": rps, "p50_ms": 1000 / rps, "errors": {}, "cpu_ms_total": cpu,
                "cpu_ms_per_request": {"api": cpu}}  # fmt: skip

    over = {q: stack_over * k for q, k in (("p50_ms", 1), ("p90_ms", 2), ("p99_ms", 3))}
    peer_q = {q: peer_over * k for q, k in (("p50_ms", 1), ("p90_ms", 2), ("p99_ms", 3))}
    return {
        "stack": path(stack_rps, 30.0), "stack-direct": path(stack_rps * 4, 3.0),
        "peer": path(peer_rps, 12.0), "peer-direct": path(peer_rps * 4, 2.0),
        "overhead": {"stack": over, "peer": peer_q},
    }  # fmt: skip


def _generation(ttft: float, rate: float) -> dict[str, float]:
    return {"ttft_ms": ttft, "generation_tokens_per_s": rate, "end_to_end_tokens_per_s": rate / 2, "tokens": 128}


def test_ratios_goals_and_report_come_from_the_measurements(tmp_path: Path) -> None:
    levels = {"1": _level(20, 50, 40, 10), "8": _level(30, 100, 80, 20), "32": _level(30, 120, 900, 150)}
    generation = {
        "stack": _generation(60, 180), "stack-direct": _generation(30, 200),
        "peer": _generation(40, 190), "peer-direct": _generation(35, 200),
    }  # fmt: skip
    ratios = peer.ratios(levels, generation)
    assert ratios["c1"]["p50_ms"] == 4.0 and ratios["c8"]["requests_per_s"] == 0.3 and ratios["c8"]["p99_ms"] == 4.0
    assert ratios["generation"]["stack_tokens_per_s_vs_direct"] == 0.9
    assert ratios["generation"]["stack_ttft_minus_direct_ms"] == 30.0
    result = {
        "config": {
            "paths": dict.fromkeys(peer.PATHS, "..."),
            "short_prompt": "Say hi.",
            "long_max_tokens": 128,
            "generation_repetitions": 5,
        },
        "levels": levels,
        "generation": generation,
        "events_per_request": {
            k: {"median": 11.0, "by_type_median": {"WORKFLOW_TASK_STARTED": 2.0}} for k in ("short", "long")
        },
        "ratios": ratios,
    }
    goals = {row[0]: row for row in report.peer_goal_rows(result)}
    assert len(goals) == 5
    over = goals["overhead p50, concurrency 1, stack / peer"]
    assert over[2] == "4.0x" and over[3].startswith("not met: +2x over")
    assert goals["CPU per short request, all stack processes (concurrency 8)"][3].startswith("not met: +10 ms over")
    assert goals["TTFT through the stack - its direct stream"][3].startswith("not met")
    tables = report.peer_tables(result)
    assert "| stack / peer | 0.4 | 0.3 | 0.25 |" in tables
    report.plot_peer(result, tmp_path / "peer.png")
    assert (tmp_path / "peer.png").stat().st_size > 10_000
