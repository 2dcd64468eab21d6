"""Markdown tables, the goals' verdicts and matplotlib plots from the sections' JSON results."""

from pathlib import Path
from typing import Any

from tools.bench.overhead import SEGMENTS

GOALS = {
    # issue 19, each against the peer (LiteLLM -> llama-cpp-python) or the side's own direct call, in the same run
    "peer_overhead_p50_ratio": 2.0,
    "peer_requests_per_s_ratio": 0.6,
    "cpu_ms_per_short_request": 20.0,
    "stack_tokens_per_s_vs_direct": 0.95,
    "ttft_over_direct_ms": 25.0,
    "overhead_p50_ms": 20.0,
    "overhead_p99_ms": 60.0,
    "tokens_ratio": 0.97,
    "requests_per_s": 100.0,
    "scaling_4": 0.9,
}


def verdict(measured: float, goal: float, lower_is_better: bool, unit: str = " ms") -> str:
    met = measured <= goal if lower_is_better else measured >= goal
    if met:
        return "**met**"
    if lower_is_better:
        return f"not met: {measured - goal:+.3g}{unit} over ({measured / goal:.1f}x the budget)"
    return f"not met: {measured / goal:.0%} of the goal ({goal - measured:.3g} short)"


def goal_rows(records: dict[str, dict[str, Any]]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    over = records.get("overhead", {}).get("results")
    if over:
        c1 = over["levels"]["1"]["overhead"]
        path = "envoy" if "envoy" in c1 else "api"
        p50, p99 = c1[path]["p50_ms"], c1[path]["p99_ms"]
        rows.append(
            ["overhead p50, concurrency 1", "≤ 20 ms", f"{p50:.1f} ms", verdict(p50, GOALS["overhead_p50_ms"], True)]
        )
        rows.append(
            ["overhead p99, concurrency 1", "≤ 60 ms", f"{p99:.1f} ms", verdict(p99, GOALS["overhead_p99_ms"], True)]
        )
    gen = records.get("generation", {}).get("results")
    if gen:
        ratio = gen["ratios"]["generation_tokens_per_s"]
        rows.append(
            [
                "tokens/s through the stack / direct",
                "≥ 0.97",
                f"{ratio:.3f}",
                verdict(ratio, GOALS["tokens_ratio"], False),
            ]
        )
    thr = records.get("throughput", {}).get("results")
    if thr:
        ramp = thr["ramp"]
        peak = ramp["peak_requests_per_s"]
        errors = ramp["errors"]
        rows.append(
            ["short requests/s, no errors", "≥ 100 req/s", f"{peak:.1f} req/s, {errors} errors",
             verdict(peak, GOALS["requests_per_s"], False)]
        )  # fmt: skip
        four = [r for r in thr["scaling"]["rows"] if r["replicas"] == 4 and r.get("api_replicas", 1) == 1]
        if four:
            eff = four[0]["efficiency"]
            rows.append(
                ["replica scaling at 4 replicas", "≥ 0.9", f"{eff:.2f}", verdict(eff, GOALS["scaling_4"], False)]
            )
    return rows


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# --- overhead -------------------------------------------------------------------------------------------------


def overhead_tables(result: dict[str, Any]) -> str:
    rows = []
    for level, data in result["levels"].items():
        for path in ("direct", "api", "envoy"):
            if path not in data:
                continue
            s = data[path]
            over = data["overhead"].get(path, {})
            rows.append(
                [
                    level,
                    path,
                    s["ok"],
                    sum(s["errors"].values()),
                    s["requests_per_s"],
                    s["p50_ms"],
                    s["p90_ms"],
                    s["p99_ms"],
                    over.get("p50_ms", "—"),
                    over.get("p90_ms", "—"),
                    over.get("p99_ms", "—"),
                ]
            )
    latency = table(
        [
            "concurrency",
            "path",
            "ok",
            "errors",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "overhead p50",
            "overhead p90",
            "overhead p99",
        ],
        rows,
    )
    envoy_rows = [
        [level, d["envoy_cost"]["p50_ms"], d["envoy_cost"]["p90_ms"], d["envoy_cost"]["p99_ms"]]
        for level, d in result["levels"].items()
        if "envoy_cost" in d
    ]
    envoy = table(["concurrency", "Envoy p50 ms", "Envoy p90 ms", "Envoy p99 ms"], envoy_rows)
    return "\n\n".join([latency, "Envoy's own cost (Envoy path minus API path, same quantile):", envoy])


SATURATED_HEADER = ["req/s, 8 callers", "CPU ms per request (temporal / api / model)", "CPU ms per request, all"]


def saturated_cells(saturated: dict[str, Any] | None) -> list[Any]:
    """A dispatch variant's 8-caller figures (runs recorded before they were measured have none)."""
    if not saturated:
        return ["—"] * len(SATURATED_HEADER)
    cpu = saturated["cpu_ms_per_request"]
    split = " / ".join(f"{cpu.get(name, 0.0):.1f}" for name in ("temporal", "api", "model"))
    return [saturated["requests_per_s"], split, saturated["cpu_ms_total"]]


def dispatch_table(by_column: dict[str, dict[str, Any]]) -> str:
    header = ["segment (p50 / p99 ms)", *by_column]
    rows = []
    for key, label in SEGMENTS:
        row: list[Any] = [label]
        for summary in by_column.values():
            seg = summary.get(key)
            row.append(f"{seg['p50_ms']:.1f} / {seg['p99_ms']:.1f}" if seg else "—")
        rows.append(row)
    rows.append(["workflow tasks per request", *[s.get("workflow_tasks_per_request", "—") for s in by_column.values()]])
    rows.append(["workflows sampled", *[s.get("workflows", 0) for s in by_column.values()]])
    return table(header, rows)


def plot_overhead(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    levels = list(result["levels"])
    width = 0.25
    for index, name in enumerate(("direct", "api", "envoy")):
        p50 = [result["levels"][lv][name]["p50_ms"] for lv in levels if name in result["levels"][lv]]
        p99 = [result["levels"][lv][name]["p99_ms"] for lv in levels if name in result["levels"][lv]]
        xs = [i + (index - 1) * width for i in range(len(p50))]
        left.bar(xs, p50, width, label=f"{name} p50")
        left.scatter(xs, p99, marker="_", s=200, color="black")
    left.set_xticks(range(len(levels)), [f"c={lv}" for lv in levels])
    left.set_ylabel("latency ms (bar p50, dash p99)")
    left.set_title("End-to-end latency by path (fake engine)")
    left.legend()
    for name, style in (("envoy", "-"), ("api", "--")):
        for q, marker in (("p50_ms", "o"), ("p90_ms", "s"), ("p99_ms", "^")):
            ys = [
                result["levels"][lv]["overhead"][name][q] for lv in levels if name in result["levels"][lv]["overhead"]
            ]
            if ys:
                right.plot([int(lv) for lv in levels][: len(ys)], ys, style, marker=marker, label=f"{name} {q[:3]}")
    right.axhline(GOALS["overhead_p50_ms"], color="green", linewidth=0.8, label="goal p50 (c=1)")
    right.axhline(GOALS["overhead_p99_ms"], color="red", linewidth=0.8, label="goal p99 (c=1)")
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xlabel("concurrency")
    right.set_ylabel("overhead vs direct ModelService (ms)")
    right.set_title("Orchestration overhead")
    right.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def micro_table(rows: list[dict[str, Any]]) -> str:
    keys = [
        "client_latency_ms",
        "workflow_total_ms",
        "first_wft_dispatch_ms",
        "activity_dispatch_ms",
        "last_wft_dispatch_ms",
        "workflow_tasks",
    ]
    return table(["variant", *keys], [[row["variant"], *[row[k] for k in keys]] for row in rows])


SHORT_LABELS = {
    "first_wft_dispatch": "1st workflow task: dispatch",
    "first_wft_run": "1st workflow task: run (select_model, schedule generate)",
    "activity_dispatch": "generate activity: dispatch to llm.<model>",
    "activity_run": "generate activity: run (ModelService call)",
    "second_wft_dispatch": "2nd workflow task: dispatch (sticky)",
    "second_wft_run": "2nd workflow task: run (complete)",
}


def plot_dispatch(by_column: dict[str, dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(11, 0.8 + 0.7 * len(by_column)))
    names = list(by_column)
    lefts = [0.0] * len(names)
    for key, _ in SEGMENTS[:-1]:
        widths = [by_column[n].get(key, {}).get("p50_ms", 0.0) for n in names]
        axis.barh(names, widths, left=lefts, label=SHORT_LABELS[key])
        lefts = [a + b for a, b in zip(lefts, widths, strict=True)]
    axis.set_xlabel("ms (median of each segment, from workflow history timestamps)")
    axis.set_title("Where a request's time goes inside Temporal")
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


# --- throughput -----------------------------------------------------------------------------------------------


def throughput_tables(result: dict[str, Any]) -> str:
    ramp = result["ramp"]
    ramp_rows = [
        [lv["concurrency"], lv["requests_per_s"], lv["ok"], sum(lv["errors"].values()), lv["p50_ms"], lv["p99_ms"]]
        for lv in ramp["levels"]
    ]
    scale_rows = [
        [r["replicas"], r.get("api_replicas", 1), r["concurrency"], r["requests_per_s"], r["ideal_requests_per_s"],
         r["efficiency"], sum(r["errors"].values()), r["p50_ms"], r["p99_ms"], *cpu_cells(r)]
        for r in result["scaling"]["rows"]
    ]  # fmt: skip
    peak = next(lv for lv in ramp["levels"] if lv["concurrency"] == ramp["peak_concurrency"])
    cpu = peak.get("cpu_ms_per_request", {})
    cpu_rows = [[name, ms] for name, ms in sorted(cpu.items(), key=lambda item: -item[1])]
    cpu_rows.append(["total", round(sum(cpu.values()), 2)])
    return "\n\n".join(
        [
            "Short requests (1 token, 1 ms fake engine) through Envoy, closed loop:",
            table(["concurrency", "req/s", "ok", "errors", "p50 ms", "p99 ms"], ramp_rows),
            f"Peak **{ramp['peak_requests_per_s']} req/s** at concurrency {ramp['peak_concurrency']}; "
            f"saturation (next level adds < 5 %) at concurrency {ramp['saturation_concurrency']}; "
            f"errors in total: {ramp['errors']}.",
            f"CPU per request at the peak (concurrency {peak['concurrency']}, {peak.get('cpu_cores_busy', '?')} "
            "cores busy), from /proc — where a request's cost lands:",
            table(["process", "CPU ms / request"], cpu_rows),
            "Replica scaling (fake engine 200 ms per request, max_concurrency 4 per replica, "
            f"{result['scaling']['config']['clients_per_slot']} callers per slot):",
            "CPU per request is from /proc, per kind of process (replicas of a kind summed), beside each figure: "
            "it separates what the orchestrator path costs from what the 2-core machine allows "
            "(cores busy = total CPU over wall time).",
            table(SCALING_HEADER, scale_rows),
            *worker_variant_lines(result.get("worker_variants", [])),
        ]
    )


SCALING_HEADER = [
    "replicas", "API replicas", "callers", "req/s", "ideal req/s", "achieved/ideal", "errors", "p50 ms", "p99 ms",
    "CPU ms/req (all)", "cores busy", "CPU ms/req by process",
]  # fmt: skip


def cpu_cells(row: dict[str, Any]) -> list[Any]:
    """Total CPU per request (load generator excluded), cores busy, and each process's share, largest first."""
    cpu = {k: v for k, v in row.get("cpu_ms_per_request", {}).items() if k != "load generator"}
    if not cpu:
        return ["—", "—", "—"]
    shares = ", ".join(f"{name} {ms}" for name, ms in sorted(cpu.items(), key=lambda item: -item[1]) if ms >= 0.05)
    return [round(sum(cpu.values()), 2), row.get("cpu_cores_busy", "—"), shares]


def worker_variant_lines(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    body = [
        [r["variant"], r["concurrency"], r["requests_per_s"], r["p50_ms"], sum(r["errors"].values()),
         r.get("cpu_ms_per_request", {}).get("api", "—"), r.get("cpu_ms_per_request", {}).get("worker", "—"),
         r.get("cpu_ms_per_request", {}).get("temporal", "—"),
         round(sum(r.get("cpu_ms_per_request", {}).values()), 2)]
        for r in rows
    ]  # fmt: skip
    return [
        "Workflow sandbox on and off (`ORCH_WORKFLOW_SANDBOX`, short requests, fresh stack each; with eager start "
        "the API's embedded worker runs most workflow tasks, so its CPU is where the sandbox shows):",
        table(
            [
                "worker",
                "callers",
                "req/s",
                "p50 ms",
                "errors",
                "API CPU ms/req",
                "worker CPU ms/req",
                "temporal CPU ms/req",
                "total CPU ms/req",
            ],
            body,
        ),
    ]


def plot_throughput(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    levels = result["ramp"]["levels"]
    xs = [lv["concurrency"] for lv in levels]
    left.plot(xs, [lv["requests_per_s"] for lv in levels], marker="o", label="req/s")
    left.axhline(GOALS["requests_per_s"], color="green", linewidth=0.8, label="goal 100 req/s")
    left.set_xscale("log", base=2)
    left.set_xlabel("concurrent callers")
    left.set_ylabel("requests / s")
    left.set_title("Short requests through Envoy -> API -> workflow -> fake model")
    twin = left.twinx()
    twin.plot(xs, [lv["p50_ms"] for lv in levels], "--", color="gray", marker="s", label="p50 ms")
    twin.set_ylabel("p50 latency ms", color="gray")
    left.legend(loc="upper left")
    by_api: dict[int, list[dict[str, Any]]] = {}
    for r in result["scaling"]["rows"]:
        by_api.setdefault(r.get("api_replicas", 1), []).append(r)
    first = next(iter(by_api.values()))
    replicas = [r["replicas"] for r in first]
    right.plot(replicas, [r["ideal_requests_per_s"] for r in first], "--", color="gray", label="ideal")
    for api_replicas, rows in by_api.items():
        xs = [r["replicas"] for r in rows]
        right.plot(xs, [r["requests_per_s"] for r in rows], marker="o", label=f"achieved, {api_replicas} API")
        for r in rows:
            right.annotate(f"{r['efficiency']:.2f}", (r["replicas"], r["requests_per_s"]), textcoords="offset points",
                           xytext=(5, -12))  # fmt: skip
    right.set_xticks(replicas)
    right.set_xlabel("fake-model replicas (200 ms, 4 slots each)")
    right.set_ylabel("requests / s")
    right.set_title("Replica scaling (labels: achieved / ideal)")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- real generation ------------------------------------------------------------------------------------------


def generation_tables(result: dict[str, Any]) -> str:
    d, s, r = result["direct"], result["stack"], result["ratios"]
    rows = [
        ["time to first token (ms)", d["ttft_ms"], s["ttft_ms"], r["ttft"]],
        ["generation tokens/s (after the first delivery)", d["generation_tokens_per_s"], s["generation_tokens_per_s"],
         r["generation_tokens_per_s"]],
        ["end-to-end tokens/s (request -> last)", d["end_to_end_tokens_per_s"], s["end_to_end_tokens_per_s"],
         r["end_to_end_tokens_per_s"]],
        ["engine tokens/s inside the stack (provenance)", d["generation_tokens_per_s"], s["engine_tokens_per_s"],
         r["engine_tokens_per_s"]],
        ["total ms", d["total_ms"], s["total_ms"], round(s["total_ms"] / d["total_ms"], 3)],
        ["completion tokens", d["tokens"], s["tokens"], "—"],
    ]  # fmt: skip
    c = result["config"]
    return "\n\n".join(
        [
            f"{c['model']} (`{c['weights']}`), prompt {c['prompt']!r}, max_tokens {c['max_tokens']}, "
            f"temperature 0, {c['n_threads']} threads, median of {c['repetitions']} alternating runs. "
            f"Same text through the stack as direct: **{result['same_text']}**.",
            table(["metric", "llama-cpp-python direct", "through the stack", "stack / direct"], rows),
        ]
    )


def plot_generation(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    d, s = result["direct"], result["stack"]
    left.bar(["direct", "stack"], [d["ttft_ms"], s["ttft_ms"]], color=["tab:blue", "tab:orange"])
    left.set_ylabel("ms")
    left.set_title("Time to first token")
    labels = ["generation", "end-to-end", "engine in stack"]
    direct = [d["generation_tokens_per_s"], d["end_to_end_tokens_per_s"], d["generation_tokens_per_s"]]
    stack = [s["generation_tokens_per_s"], s["end_to_end_tokens_per_s"], s["engine_tokens_per_s"]]
    xs = range(len(labels))
    right.bar([x - 0.2 for x in xs], direct, 0.4, label="direct")
    right.bar([x + 0.2 for x in xs], stack, 0.4, label="stack")
    right.set_xticks(list(xs), labels)
    right.set_ylabel("tokens / s")
    right.set_title(f"SmolLM2-135M, {result['config']['max_tokens']} tokens, greedy")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- RAG ------------------------------------------------------------------------------------------------------


def rag_tables(result: dict[str, Any]) -> str:
    emb = result["embedding"]
    rows = [
        ["engine (in process)", emb["direct"]["texts_per_s"], emb["direct"]["tokens_per_s"]],
        [f"gRPC EmbeddingService (batch {emb['grpc']['batch']})", emb["grpc"]["texts_per_s"],
         emb["grpc"]["tokens_per_s"]],
    ]  # fmt: skip
    store_rows = []
    for kind, sizes in result["stores"].items():
        for size, s in sizes.items():
            store_rows.append(
                [
                    kind,
                    size,
                    s["load_s"],
                    s["exact"]["p50_ms"],
                    s["exact"]["p95_ms"],
                    s.get("ann", {}).get("p50_ms", "—"),
                    s.get("ann", {}).get("p95_ms", "—"),
                    s.get("ann_recall_at_10", "—"),
                    s.get("index_build_s", "—"),
                ]
            )
    return "\n\n".join(
        [
            f"Embedding throughput, MiniLM-L6-v2, {emb['texts']} ~800-character chunks ({emb['tokens']} tokens):",
            table(["path", "texts/s", "tokens/s"], rows),
            "Vector search, top-10 over 384-d clustered vectors (30 queries):",
            table(
                [
                    "store",
                    "chunks",
                    "load s",
                    "exact p50 ms",
                    "exact p95 ms",
                    "ANN p50 ms",
                    "ANN p95 ms",
                    "ANN recall@10",
                    "index build s",
                ],
                store_rows,
            ),
        ]
    )


# --- the peer (tools/bench/peer.py) ---------------------------------------------------------------------------


def peer_goal_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Issue 19's goals, each from the same run as the peer."""
    r, levels = result["ratios"], result["levels"]
    gen = r["generation"]
    p50 = r["c1"]["p50_ms"]
    cpu = levels["8"]["stack"]["cpu_ms_total"]
    rows: list[list[Any]] = [
        ["overhead p50, concurrency 1, stack / peer", "≤ 2x",
         f"{p50}x" if p50 is not None else "peer overhead ≤ 0",
         verdict(p50, GOALS["peer_overhead_p50_ratio"], True, "x") if p50 is not None else "—"],
        ["short req/s at concurrency 8, stack / peer", "≥ 0.6x", f"{r['c8']['requests_per_s']}x",
         verdict(r["c8"]["requests_per_s"], GOALS["peer_requests_per_s_ratio"], False)],
        ["CPU per short request, all stack processes (concurrency 8)", "≤ 20 ms", f"{cpu} ms",
         verdict(cpu, GOALS["cpu_ms_per_short_request"], True)],
        ["tokens/s through the stack / its direct stream, 128 tokens", "≥ 0.95x",
         f"{gen['stack_tokens_per_s_vs_direct']}x",
         verdict(gen["stack_tokens_per_s_vs_direct"], GOALS["stack_tokens_per_s_vs_direct"], False)],
        ["TTFT through the stack - its direct stream", "≤ 25 ms", f"{gen['stack_ttft_minus_direct_ms']} ms",
         verdict(gen["stack_ttft_minus_direct_ms"], GOALS["ttft_over_direct_ms"], True)],
    ]  # fmt: skip
    return rows


def peer_tables(result: dict[str, Any]) -> str:
    levels, paths = result["levels"], list(result["config"]["paths"])
    overhead_rows = [
        [f"c={c}", side, *(levels[c]["overhead"][side][q] for q in ("p50_ms", "p90_ms", "p99_ms")),
         *((result["ratios"][f"c{c}"][q] for q in ("p50_ms", "p90_ms", "p99_ms")) if side == "stack" else ("—",) * 3)]
        for c in levels if c in ("1", "8") for side in ("peer", "stack")
    ]  # fmt: skip
    rate_rows = [
        [path, *(levels[c][path]["requests_per_s"] for c in levels), *(levels[c][path]["p50_ms"] for c in levels),
         sum(sum(levels[c][path]["errors"].values()) for c in levels)]
        for path in paths
    ]  # fmt: skip
    rate_rows.append(["stack / peer", *(result["ratios"][f"c{c}"]["requests_per_s"] for c in levels),
                      *("—" for _ in levels), "—"])  # fmt: skip
    cpu_rows = [
        [path, levels["8"][path]["cpu_ms_total"],
         ", ".join(f"{k} {v}" for k, v in sorted(levels["8"][path]["cpu_ms_per_request"].items(), key=lambda i: -i[1]))]
        for path in paths
    ]  # fmt: skip
    gen = result["generation"]
    gen_rows = [
        [path, gen[path]["ttft_ms"], gen[path]["generation_tokens_per_s"], gen[path]["end_to_end_tokens_per_s"],
         gen[path]["tokens"]]
        for path in paths
    ]  # fmt: skip
    events = result["events_per_request"]
    event_rows = [
        [kind, events[kind]["median"], ", ".join(f"{k} {v:g}" for k, v in events[kind]["by_type_median"].items())]
        for kind in ("short", "long")
    ]
    paths_rows = [[path, what] for path, what in result["config"]["paths"].items()]
    return "\n\n".join(
        [
            "Four paths on the same SmolLM2 weights, in rounds that rotate them (same load, same run):",
            table(["path", "what"], paths_rows),
            f'Short requests ("{result["config"]["short_prompt"]}", 1 token). Overhead is a side\'s latency '
            "quantile minus its own direct call's; the ratio columns are the stack's over the peer's:",
            table(
                ["level", "side", "p50 ms", "p90 ms", "p99 ms", "p50 ratio", "p90 ratio", "p99 ratio"], overhead_rows
            ),
            "Requests per second and p50 latency, closed loop:",
            table(["path", *(f"req/s c={c}" for c in levels), *(f"p50 ms c={c}" for c in levels), "errors"], rate_rows),
            "CPU per short request at concurrency 8, from /proc, charged to the path that was running "
            "(the total counts that side's processes; the load generator is listed, not counted):",
            table(["path", "total CPU ms/req", "per process (ms/req)"], cpu_rows),
            f"Streamed generation ({result['config']['long_max_tokens']} tokens at most, greedy), medians of "
            f"{result['config']['generation_repetitions']}:",
            table(["path", "TTFT ms", "tokens/s after the first", "end-to-end tokens/s", "tokens"], gen_rows),
            "History events per stack request (median of a sample of its workflows):",
            table(["request", "events", "by type (median)"], event_rows),
            "Goals (issue 19), as measured in this run:",
            table(["goal", "target", "measured", "verdict"], peer_goal_rows(result)),
            PEER_GAPS,
        ]
    )


PEER_GAPS = """What would close the gaps that remain:

- **Where the difference now lies.** The two direct rows show the engines even: the stack's engine keeps the
  prompt's cache and, for a repeat of the prompt it evaluated last, its logits, as llama-cpp-python's server does
  (`LlamaEngine._evaluate_prompt`, ADR 0019). What separates the sides is the control plane, and the CPU table
  says which process pays: the Temporal dev server most, then the API.
- **Requests per second and CPU per request.** On 2 cores a request's throughput is its CPU. The dev server's
  share is the history it writes (the events above) into its SQLite file, now in write-ahead-log mode: in
  [dispatch.md](dispatch.md) the `rollback-journal` row shows what SQLite's default journal cost, and the
  `in-memory` row that the file now costs little beside no file at all. What remains is the dev server's own work
  per event, which a production cluster (PostgreSQL or Cassandra on its own cores) moves off the machine that
  serves. The API's share is mostly the Temporal SDK's Python per workflow activation ([profile.md](profile.md)),
  and a short request already has the fewest activations a run can have.
- **Overhead.** Two workflow tasks and an activity dispatch per request ([dispatch.md](dispatch.md)); the first
  task no longer runs a local activity, since the API chooses the model as it starts the run. Update-with-start,
  the alternative to eager start and `result()`, measured slower there, so eager start stays.
- **TTFT and tokens/s.** A streamed delta reaches the client through the workflow's record (a signal from the
  model's worker, a workflow task, then the API's `watch_stream` long-poll), so TTFT carries the unary overhead
  plus that round trip, while llama.cpp's two threads hold both cores. The flush interval
  (`MODEL_STREAM_FLUSH_INTERVAL_S`, swept in [flush.md](flush.md)) trades smoothness against the control plane's
  CPU, which on 2 cores is also llama.cpp's decode speed."""


def plot_peer(result: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.5))
    levels, paths = result["levels"], list(result["config"]["paths"])
    quantiles = ("p50_ms", "p90_ms", "p99_ms")
    labels = [f"c={c} {q[:3]}" for c in ("1", "8") for q in quantiles]
    xs = range(len(labels))
    for offset, side in ((-0.2, "peer"), (0.2, "stack")):
        values = [levels[c]["overhead"][side][q] for c in ("1", "8") for q in quantiles]
        left.bar([x + offset for x in xs], values, width=0.4, label=side)
    left.set_xticks(list(xs), labels, rotation=30)
    left.set_ylabel("overhead over own direct call, ms")
    left.set_title("Overhead, short requests")
    left.legend()
    concurrencies = [int(c) for c in levels]
    for name in paths:
        middle.plot(concurrencies, [levels[str(c)][name]["requests_per_s"] for c in concurrencies], marker="o",
                    label=name)  # fmt: skip
    middle.set_xscale("log", base=2)
    middle.set_xlabel("concurrency")
    middle.set_ylabel("req/s")
    middle.set_title("Short requests per second")
    middle.legend()
    gen = result["generation"]
    right.bar(paths, [gen[p]["generation_tokens_per_s"] for p in paths], color="tab:green")
    right.set_ylabel("tokens/s after the first")
    twin = right.twinx()
    twin.plot(paths, [gen[p]["ttft_ms"] for p in paths], color="tab:red", marker="o")
    twin.set_ylabel("TTFT ms", color="tab:red")
    right.set_title("128-token stream")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
