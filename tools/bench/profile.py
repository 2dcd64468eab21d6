"""Profile the API and the orchestrator worker under load with py-spy, and list where their CPU goes.

`python -m tools.bench.profile` writes docs/benchmarks/profiles/{api,worker}.txt (py-spy's collapsed stacks, for
any flame-graph viewer) and profile.md (the functions that hold the most samples, by self and by inclusive time).
"""

import argparse
import asyncio
import sys
from collections import Counter
from pathlib import Path

from tools.bench import machine
from tools.bench.throughput import SHORT, drive
from tools.stack import Child, Stack, script_spec

PROFILED = ("api", "worker")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "benchmarks"


def top_frames(collapsed: Path, limit: int = 12) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top self frames, top inclusive frames) from py-spy's raw format: `a;b;c count` per line."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, own.most_common(limit), inclusive.most_common(limit)


async def profile(out: Path, seconds: int, concurrency: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    async with Stack(SHORT) as stack:
        await drive(stack, 4, 3.0, 0, measure_cpu=False)  # warm caches before sampling
        pids = {child.name: child.pid for child in stack.children if child.name in PROFILED}
        recorders = [
            Child(
                script_spec(
                    f"py-spy-{name}",
                    (
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(seconds),
                        "--rate",
                        "200",
                        "--format",
                        "raw",
                        "--output",
                        str(out / f"{name}.txt"),
                        "--nonblocking",
                    ),
                )
            ).spawn()
            for name, pid in pids.items()
        ]
        load = await drive(stack, concurrency, seconds + 2, 0)
        for recorder in recorders:
            await recorder.wait_exit(60)
    lines = [
        "# Where the API and the worker spend their CPU under load",
        "",
        machine.markdown(machine.describe(sys.argv[1:], module="tools.bench.profile")),
        "",
        f"py-spy at 200 Hz for {seconds} s while {concurrency} callers sent short requests through Envoy "
        f"({load['requests_per_s']} req/s, errors {load['errors']}). Collapsed stacks: "
        + ", ".join(f"[{name}.txt]({out.name}/{name}.txt)" for name in PROFILED)
        + ".",
        "",
    ]
    for name in PROFILED:
        total, own, inclusive = top_frames(out / f"{name}.txt")
        lines += [f"## {name} ({total} samples)", "", "| self % | function |", "| --- | --- |"]
        lines += [f"| {100 * n / max(total, 1):.1f} | `{frame}` |" for frame, n in own]
        lines += ["", "| inclusive % | function |", "| --- | --- |"]
        lines += [f"| {100 * n / max(total, 1):.1f} | `{frame}` |" for frame, n in inclusive]
        lines.append("")
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
