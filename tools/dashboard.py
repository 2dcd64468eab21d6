"""The Grafana dashboard against real data: a fake-engine stack under traffic, scraped by a real Prometheus with the
project's own config. The Prometheus test runs every panel's query here; `make dashboard-image` renders the panels
from the same data into docs/img/dashboard.png, with the series it plotted in docs/img/dashboard.json."""

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
from llmorch.v1 import orchestrator_pb2, types_pb2

from llmorch_client.client import OrchestratorClient
from llmorch_common.constants import SECOND_MODEL_ID
from tools.stack import ROOT, ModelGroup, Stack, StackConfig, fake_stack, free_port, prometheus_spec

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "llmorch.json"
# Grafana's $__rate_interval is at least four scrape intervals; 1 s scrapes make 30 s a safe window here.
RATE_INTERVAL = "30s"
SLOW_MODEL = SECOND_MODEL_ID  # registered, but too slow for the generation bound: asking for it forces a fallback
GENERATE_TIMEOUT_S = "2"


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    targets: tuple[tuple[str, str], ...]  # (PromQL with the test's rate window, legend format)


def _panels(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in nodes:
        yield node
        yield from _panels(node.get("panels", []))


def dashboard_panels() -> list[Panel]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        Panel(
            panel["title"],
            panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""),
            tuple(
                (target["expr"].replace("$__rate_interval", RATE_INTERVAL), target.get("legendFormat", ""))
                for target in panel.get("targets", [])
                if target.get("expr")
            ),
        )
        for panel in _panels(dashboard["panels"])
        if panel.get("targets")
    ]


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        document: dict[str, Any] = json.loads(reply.read())
    return document


async def query(port: int, expr: str, path: str = "query", **params: float) -> list[dict[str, Any]]:
    """Prometheus's HTTP API: an instant query, or with path="query_range" and start/end/step, a range."""
    url = f"http://127.0.0.1:{port}/api/v1/{path}?" + urllib.parse.urlencode({"query": expr, **params})
    document = await asyncio.to_thread(get_json, url)
    if document["status"] != "success":
        raise RuntimeError(f"{expr}: {document}")
    result: list[dict[str, Any]] = document["data"]["result"]
    return result


def observed_config() -> StackConfig:
    """The fast fake model the router picks by default, and a slow one that asking for forces a fallback."""
    config = fake_stack(max_concurrency=4, first_token_ms=5.0, token_ms=1.0)
    slow = ModelGroup(SLOW_MODEL, "fake", settings=(("fake_first_token_ms", "60000"), ("drain_timeout_s", "2")))
    return replace(
        config, models=(*config.models, slow), orchestrator_env=(("ORCH_GENERATE_TIMEOUT_S", GENERATE_TIMEOUT_S),)
    )


FALLBACK_EVERY_S = 15.0


async def traffic(stack: Stack, seconds: float) -> None:
    """Unary and streaming requests through Envoy, a ListModels (queue depth), one bad request (an error code) and,
    first and then every FALLBACK_EVERY_S, a request for the slow model, which falls back (fallbacks by reason)."""
    request = orchestrator_pb2.GenerateRequest(prompt="Say hi.", sampling=types_pb2.SamplingParams(max_tokens=4))
    slow = orchestrator_pb2.GenerateRequest(model_id=SLOW_MODEL)
    slow.MergeFrom(request)
    async with OrchestratorClient(stack.envoy_target, stack.api_key) as client:
        now = time.monotonic()
        deadline, next_fallback = now + seconds, now
        while time.monotonic() < deadline:
            if time.monotonic() >= next_fallback:
                next_fallback += FALLBACK_EVERY_S
                reply = await client.generate(slow, timeout_s=30)
                if [f.model_id for f in reply.provenance.fallbacks] != [SLOW_MODEL]:
                    raise AssertionError(f"expected a fallback from {SLOW_MODEL}: {reply.provenance}")
            await client.generate(request, timeout_s=30)
            async for _ in client.stream(request, timeout_s=30):
                pass
            await client.list_models()
        try:
            await client.generate(orchestrator_pb2.GenerateRequest(prompt=""), timeout_s=10)
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
        else:
            raise AssertionError("an empty prompt must be refused")


@contextlib.asynccontextmanager
async def observed_stack(home: Path, traffic_s: float = 8.0) -> AsyncIterator[tuple[Stack, int]]:
    """The stack and its Prometheus (the port), every target up and scraped after `traffic_s` of traffic."""
    async with Stack(observed_config()) as stack:
        port = free_port()
        config = stack.write_prometheus_config(home / "prometheus.yml")
        await stack.launch(prometheus_spec(config, port, home / "tsdb")).wait_ready()

        async def all_targets_up() -> bool:
            try:
                targets = (await asyncio.to_thread(get_json, f"http://127.0.0.1:{port}/api/v1/targets"))["data"]
            except urllib.error.HTTPError:  # 503 while Prometheus is still starting (its port accepts first)
                return False
            return bool(targets["activeTargets"]) and all(t["health"] == "up" for t in targets["activeTargets"])

        deadline = time.monotonic() + 30
        while not await all_targets_up():
            if time.monotonic() > deadline:
                raise TimeoutError("every scrape target up within 30 s")
            await asyncio.sleep(0.5)
        await traffic(stack, traffic_s)
        await asyncio.sleep(2.0)  # two more scrapes, so the last requests are in every rate window
        yield stack, port


def _legend(template: str, labels: dict[str, str]) -> str:
    text = template
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text or ", ".join(f"{k}={v}" for k, v in labels.items())


async def panel_series(port: int, window_s: float) -> list[dict[str, Any]]:
    """Every panel's series over the last `window_s`, one point a second, as Prometheus returned them."""
    end = time.time()
    rendered = []
    for panel in dashboard_panels():
        series = []
        for expr, legend in panel.targets:
            for row in await query(port, expr, "query_range", start=end - window_s, end=end, step=1.0):
                points = [(float(t) - end, float(v)) for t, v in row["values"] if v not in ("NaN", "+Inf", "-Inf")]
                series.append({"legend": _legend(legend, row["metric"]), "expr": expr, "points": points})
        rendered.append({"title": panel.title, "unit": panel.unit, "series": series})
    return rendered


def plot(panels: list[dict[str, Any]], path: Path, window_s: float) -> None:
    import matplotlib  # a dev dependency: imported only where a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 2
    rows = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(14, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for series in panel["series"]:
            if series["points"]:
                xs, ys = zip(*series["points"], strict=True)
                ax.plot(xs, ys, label=series["legend"][:40])
        ax.set_title(panel["title"], fontsize=9)
        ax.set_xlim(-window_s, 0)
        ax.set_xlabel("seconds before render", fontsize=7)
        ax.set_ylabel(panel["unit"], fontsize=7)
        ax.tick_params(labelsize=7)
        if panel["series"]:
            ax.legend(fontsize=6, loc="upper left")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    figure.suptitle("LLM Orchestrator dashboard: fake-engine stack, real Prometheus (make dashboard-image)")
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)


async def render(out: Path, traffic_s: float) -> None:
    window_s = traffic_s + 10  # the traffic, and the scrapes before and after it
    with tempfile.TemporaryDirectory(prefix="llmorch-dashboard-") as home:
        async with observed_stack(Path(home), traffic_s) as (_, port):
            panels = await panel_series(port, window_s)
    document = {"command": "make dashboard-image", "panels": panels}
    (out / "dashboard.json").write_text(json.dumps(document, separators=(",", ":")) + "\n")
    plot(panels, out / "dashboard.png", window_s)
    print(f"wrote {out / 'dashboard.png'} and {out / 'dashboard.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--traffic-s", type=float, default=60.0, help="seconds of traffic before rendering")
    args = parser.parse_args()
    asyncio.run(render(args.out, args.traffic_s))


if __name__ == "__main__":
    main()
