"""docs/benchmarks/README.md (index, how to run, machine) and overhead.md (the budget), from the sections' JSON.

Both are regenerated after every run from whatever <section>.json files exist, so each figure in them is the one
its JSON holds, and each JSON names the command and machine that produced it.
"""

import json
from pathlib import Path
from typing import Any

from tools.bench import machine
from tools.bench.budget import render
from tools.bench.report import goal_rows, peer_goal_rows, table

FILES = {
    "overhead": ["overhead.md", "overhead.json", "overhead.png", "overhead_dispatch.png"],
    "dispatch": ["dispatch.md", "dispatch.json", "dispatch.png"],
    "throughput": ["throughput.md", "throughput.json", "throughput.png"],
    "generation": ["generation.md", "generation.json", "generation.png"],
    "flush": ["flush.md", "flush.json"],
    "peer": ["peer.md", "peer.json", "peer.png"],
    "rag": ["rag.md", "rag.json", "embed_bench.json", "embed_bench.png"],
}


def load(out: Path) -> dict[str, dict[str, Any]]:
    records = {}
    for path in sorted(out.glob("*.json")):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and "section" in record:
            records[record["section"]] = record
    return records


def write_index(out: Path) -> None:
    records = load(out)
    lines = [
        "# Benchmarks",
        "",
        "Every figure here was produced by the harness in `tools/bench/` and is committed with the JSON it came "
        "from; each section's JSON and Markdown name the exact command, commit and machine.",
        "",
        "## How to run",
        "",
        "```",
        "make bench                                   # everything; each section's time is in the table below",
        "python -m tools.bench --only overhead,peer   # subset of overhead,dispatch,throughput,generation,peer,rag",
        "python -m tools.bench --quick                # fewer samples, no RAG: for iteration, not for the record",
        "python -m tools.bench --out /tmp/bench       # write elsewhere",
        "python -m tools.bench --render-only          # rebuild the Markdown and plots from the JSON, measure nothing",
        "```",
        "",
        "Each comparison runs side by side in one run: the stack is started as real processes on free ports from "
        "`tools/stack.py`, the one definition `make up` also uses, with the same flags (the Temporal dev server on its "
        "SQLite file, orchestrator API and worker, `python -m model_svc` replicas with the fake or the real llama.cpp "
        "engine, Envoy); variants are `StackConfig` parameters. The load generator is this separate process, so it "
        "never shares an event loop with the API.",
        "",
        "## Goals (issue 6), as measured",
        "",
        table(["goal", "target", "measured", "verdict"], goal_rows(records)) if records else "(no results yet)",
        "",
        "## Goals against the peer (issue 19), as measured in the same run",
        "",
        table(["goal", "target", "measured", "verdict"], peer_goal_rows(records["peer"]["results"]))
        if "peer" in records
        else "(the peer section has not run yet)",
        "",
        "The budget, where the time goes and what would cut it: [overhead.md](overhead.md). Where the API "
        "spends its CPU under load, by thread and by Python function (`python -m tools.bench.profile`): "
        "[profile.md](profile.md). "
        "The optional Redis cache, a hit against a miss and embeddings warm against cold "
        "(`python -m tools.bench.cache_bench`, ADR 0017): [cache.md](cache.md).",
        "",
        "## Sections",
        "",
    ]
    rows = []
    for name, files in FILES.items():
        record = records.get(name)
        if not record:
            rows.append([name, "not run yet", "—"])
            continue
        links = ", ".join(f"[{f}]({f})" for f in files if (out / f).exists())
        rows.append(
            [
                name,
                links,
                f"`{record['machine']['command']}` ({record['seconds']} s{', quick' if record['quick'] else ''})",
            ]
        )
    lines += [table(["section", "files", "produced by"], rows), ""]
    first = next(iter(records.values()), None)
    if first:
        lines += ["## Machine", "", machine.markdown(first["machine"]), ""]
    (out / "README.md").write_text("\n".join(lines))
    write_overhead_doc(out, records)


def write_overhead_doc(out: Path, records: dict[str, dict[str, Any]]) -> None:
    (out / "overhead.md").write_text(render(records))
