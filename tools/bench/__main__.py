"""`make bench`: every comparison side by side in one run; JSON, Markdown and PNG under docs/benchmarks/.

python -m tools.bench [--only overhead,dispatch,throughput,generation,flush,peer,rag] [--quick] [--out DIR]
"""

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.bench import docs, flush, machine, overhead, peer, realgen, report, throughput

SECTIONS = ("overhead", "dispatch", "throughput", "generation", "flush", "peer", "rag")


def run_rag(out: Path, quick: bool) -> dict[str, Any] | None:
    """tools/bench/embed_bench.py has no reduced mode, so it runs only in full runs (about 5 minutes)."""
    if quick:
        print("  rag: skipped under --quick (embed_bench has no reduced mode)", flush=True)
        return None
    from tools.bench import embed_bench

    return embed_bench.run(out)


def section_runner(name: str, out: Path, quick: bool) -> Callable[[], dict[str, Any] | None]:
    runners: dict[str, Callable[[], dict[str, Any] | None]] = {
        "overhead": lambda: asyncio.run(overhead.run(quick)),
        "dispatch": lambda: asyncio.run(overhead.run_dispatch(quick)),
        "throughput": lambda: asyncio.run(throughput.run(quick)),
        "generation": lambda: asyncio.run(realgen.run(quick)),
        "flush": lambda: asyncio.run(flush.run(quick)),
        "peer": lambda: asyncio.run(peer.run(quick)),
        "rag": lambda: run_rag(out, quick),
    }
    return runners[name]


def render_section(name: str, results: dict[str, Any], out: Path) -> str:
    if name == "overhead":
        report.plot_overhead(results, out / "overhead.png")
        report.plot_dispatch({f"c={k}": v for k, v in results["dispatch"].items()}, out / "overhead_dispatch.png")
        return "\n\n".join(
            [
                report.overhead_tables(results),
                "![overhead](overhead.png)",
                "Inside Temporal, per concurrency (from the histories of the Envoy-path workflows):",
                report.dispatch_table({f"c={k}": v for k, v in results["dispatch"].items()}),
                "![dispatch by concurrency](overhead_dispatch.png)",
            ]
        )
    if name == "dispatch":
        by_variant = {k: v["dispatch"] for k, v in results["variants"].items()}
        report.plot_dispatch(by_variant, out / "dispatch.png")
        rows = [
            [k, v["label"], " ".join(v["temporal_args"]) or "—", v["levels"]["1"]["api"]["p50_ms"],
             v["levels"]["1"]["overhead"]["api"]["p50_ms"], v["levels"]["1"]["overhead"]["api"]["p99_ms"],
             *report.saturated_cells(v.get("saturated"))]
            for k, v in results["variants"].items()
        ]  # fmt: skip
        header = ["variant", "what", "start-dev flags", "API p50 ms", "overhead p50 ms", "overhead p99 ms"]
        return "\n\n".join(
            [
                "API path (no Envoy), fake engine 20 ms + 3 x 2 ms; each variant on a fresh stack. Latency at "
                "concurrency 1; then 8 callers at once, with every process's CPU per request.",
                report.table([*header, *report.SATURATED_HEADER], rows),
                report.dispatch_table(by_variant),
                "![dispatch](dispatch.png)",
                "A minimal workflow (one no-op activity; client and worker in one process, no orchestrator code), "
                "medians in ms from histories:",
                report.micro_table(results["minimal_workflow"]["rows"]),
            ]
        )
    if name == "throughput":
        report.plot_throughput(results, out / "throughput.png")
        return report.throughput_tables(results) + "\n\n![throughput](throughput.png)"
    if name == "flush":
        return flush.table(results)
    if name == "generation":
        report.plot_generation(results, out / "generation.png")
        return report.generation_tables(results) + "\n\n![generation](generation.png)"
    if name == "peer":
        report.plot_peer(results, out / "peer.png")
        return report.peer_tables(results) + "\n\n![the stack beside the peer](peer.png)"
    return report.rag_tables(results) + "\n\n![rag](embed_bench.png)\n\n" + RAG_QUALITY


# Retrieval quality needs its own corpora and ingestions (about 15 minutes), so `make rag-eval` measures it.
RAG_QUALITY = (
    "Retrieval quality (dense, keyword and hybrid by chunking, on the public and the held-out questions) is in "
    "[rag_quality.md](rag_quality.md), written by `python -m tools.rag_eval --out docs/benchmarks` (`make rag-eval`); "
    "the whole HTML documentation ingested with a worker killed on the way, then queried and answered from, is in "
    "[rag_full_html.md](rag_full_html.md), written by `make bench-rag-full`."
)


TITLES = {
    "overhead": "Orchestration overhead against a direct ModelService call",
    "dispatch": "Temporal dev server: workflow-task and activity dispatch latency",
    "throughput": "Throughput and replica scaling (fake engine)",
    "generation": "Real generation: SmolLM2 through the stack against llama-cpp-python",
    "flush": "Stream flush interval: TTFT, tokens/s and control-plane CPU of a 128-token stream",
    "peer": "The stack beside the peer: LiteLLM's proxy in front of llama-cpp-python's server, same run",
    "rag": "RAG: embedding throughput, retrieval latency and ANN recall",
}


def write_section(out: Path, record: dict[str, Any]) -> None:
    name = record["section"]
    body = render_section(name, record["results"], out)
    header = f"# {TITLES[name]}\n\n{machine.markdown(record['machine'])}\n- **Section time:** {record['seconds']} s"
    if record["quick"]:
        header += " (**--quick**: fewer samples; not the committed figures)"
    (out / f"{name}.md").write_text(f"{header}\n\n{body}\n")


def render_all(out: Path) -> None:
    for record in docs.load(out).values():
        write_section(out, record)
    docs.write_index(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter levels, no RAG (iteration)")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="where results are written")
    parser.add_argument(
        "--render-only", action="store_true", help="measure nothing; rebuild Markdown and plots from the JSON in --out"
    )
    args = parser.parse_args()
    if args.render_only:
        render_all(args.out)
        return
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        sys.exit(f"unknown sections {sorted(unknown)}; choose from {','.join(SECTIONS)}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    described = machine.describe(sys.argv[1:])
    began = time.perf_counter()
    for name in SECTIONS:
        if name not in chosen:
            continue
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        results = section_runner(name, out, args.quick)()
        if results is None:
            continue
        seconds = round(time.perf_counter() - started, 1)
        record = {"section": name, "machine": described, "quick": args.quick, "seconds": seconds, "results": results}
        (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        write_section(out, record)
        print(f"   {name} done in {seconds} s", flush=True)
    docs.write_index(out)
    print(f"all done in {time.perf_counter() - began:.0f} s; see {out / 'README.md'}", flush=True)


if __name__ == "__main__":
    main()
