"""Profile the API under load: its CPU by thread, and its Python frames on the CPU, with py-spy.

`python -m tools.bench.profile` writes docs/benchmarks/profiles/api.txt (py-spy's collapsed stacks, for any
flame-graph viewer) and profile.md (CPU per request by thread, and the functions that hold the most samples).
Only the API is profiled: its embedded worker runs the workflow tasks (eager start), so the orchestrator worker
process is idle in this load.
"""

import argparse
import asyncio
import re
import sys
from collections import Counter
from pathlib import Path

from tools.bench import machine
from tools.bench.throughput import SHORT, drive
from tools.stack import Child, Stack, script_spec, stat_cpu_seconds

PROFILED = "api"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"
LINE_NUMBER = re.compile(r":\d+\)$")


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """Each thread's name and user+system CPU seconds so far, by thread id (from /proc)."""
    threads: dict[str, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            threads[task.name] = ((task / "comm").read_text().strip(), stat_cpu_seconds(task / "stat", children=False))
        except OSError:
            continue  # the thread ended while it was read
    return threads


def cpu_by_thread_name(before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds used between two readings, summed over threads of the same name (a pool shares one)."""
    used: dict[str, float] = {}
    for tid, (name, seconds) in after.items():
        used[name] = used.get(name, 0.0) + seconds - before.get(tid, (name, 0.0))[1]
    return used


def top_frames(collapsed: Path, limit: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top self functions, top inclusive functions) from py-spy's raw format (`a;b;c count` per line),
    each function counted once per stack whatever line of it was running."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        functions = [LINE_NUMBER.sub(")", frame) for frame in stack.split(";")]
        total += count
        own[functions[-1]] += count
        for function in set(functions):
            inclusive[function] += count
    return total, own.most_common(limit), inclusive.most_common(limit)


async def profile(out: Path, seconds: int, concurrency: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    async with Stack(SHORT) as stack:
        await drive(stack, 4, 3.0, 0, measure_cpu=False)  # warm caches before sampling
        pid = next(child.pid for child in stack.children if child.name == PROFILED)
        assert pid is not None
        # --gil samples only the thread holding the GIL: Python that is running, never a thread waiting in a
        # selector or a queue, which an all-threads profile counts as if it were work. Each sample pauses the
        # process (no --nonblocking), so the GIL's holder and its stack are read in one consistent state.
        spy = (str(Path(sys.executable).parent / "py-spy"), "record", "--gil", "--pid", str(pid))
        options = ("--duration", str(seconds), "--rate", "200", "--format", "raw")
        recorder = Child(script_spec("py-spy", (*spy, *options, "--output", str(out / f"{PROFILED}.txt")))).spawn()
        before = thread_cpu(pid)
        load = await drive(stack, concurrency, seconds, 0)
        used = cpu_by_thread_name(before, thread_cpu(pid))
        await recorder.wait_exit(60)
    requests = load["requests"] - sum(load["errors"].values())  # the answered ones
    total, own, inclusive = top_frames(out / f"{PROFILED}.txt", 25)
    by_thread = sorted(used.items(), key=lambda item: -item[1])
    lines = [
        "# Where the API spends its CPU under load",
        "",
        machine.markdown(machine.describe(sys.argv[1:], module="tools.bench.profile")),
        "",
        f"{concurrency} callers sent short requests through Envoy for {seconds} s ({load['requests_per_s']} req/s, "
        f"errors {load['errors']}); the fake engine answers, so the model costs next to nothing.",
        "",
        "## CPU per request, by thread (from /proc)",
        "",
        "`python` is the event loop's thread (the servicers, the Temporal client and the embedded worker's Python "
        "side); `tokio-rt-worker` and `workflow-proces` are Temporal's Rust core; `event_engine` and `grpc_*` are "
        "gRPC's C core.",
        "",
        "| thread | CPU ms per request | share |",
        "| --- | --- | --- |",
        *(
            f"| {name} | {seconds_used * 1000 / max(requests, 1):.2f} | "
            f"{100 * seconds_used / max(sum(used.values()), 1e-9):.0f}% |"
            for name, seconds_used in by_thread
            if seconds_used > 0
        ),
        "",
        f"## Python on the CPU: py-spy `--gil` at 200 Hz ({total} samples, "
        f"[{PROFILED}.txt]({out.name}/{PROFILED}.txt))",
        "",
        "| inclusive % | function |",
        "| --- | --- |",
        *(f"| {100 * n / max(total, 1):.1f} | `{function}` |" for function, n in inclusive),
        "",
        "| self % | function |",
        "| --- | --- |",
        *(f"| {100 * n / max(total, 1):.1f} | `{function}` |" for function, n in own),
        "",
    ]
    (out.parent / "profile.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=DOCS / "profiles")
    options = parser.parse_args()
    asyncio.run(profile(options.out, options.seconds, options.concurrency))


if __name__ == "__main__":
    main()
