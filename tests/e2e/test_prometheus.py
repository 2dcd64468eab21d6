"""A real Prometheus (Debian's) scrapes a real stack with the project's own scrape config: every Grafana panel's
query returns data, the config and the alert rules pass promtool, and the alert rules pass their unit tests."""

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml  # type: ignore[import-untyped]
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

from llmorch_common.constants import SECOND_MODEL_ID
from tools.stack import PROMETHEUS_CONFIG, ModelGroup, Stack, fake_stack, free_port, prometheus_spec

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "llmorch.json"
# Grafana's $__rate_interval is at least four scrape intervals; 1 s scrapes make 30 s a safe window here.
RATE_INTERVAL = "30s"
SLOW_MODEL = SECOND_MODEL_ID  # registered, but too slow for the generation bound: asking for it forces a fallback


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    assert found, "promtool comes with Debian's prometheus package: `make setup debian` installs it"
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=60, check=False)


def panels(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in nodes:
        yield node
        yield from panels(node.get("panels", []))


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", RATE_INTERVAL))
        for panel in panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def test_promtool_accepts_the_config_and_the_rules() -> None:
    checked = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "4 rules found" in checked.stdout


def test_alert_rules_pass_their_unit_tests() -> None:
    tested = promtool("test", "rules", str(PROMETHEUS_CONFIG.parent / "alerts_test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        document: dict[str, Any] = json.loads(reply.read())
    return document


async def query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    document = await asyncio.to_thread(get_json, url)
    assert document["status"] == "success", document
    result: list[dict[str, Any]] = document["data"]["result"]
    return result


async def traffic(target: str, seconds: float) -> None:
    """Unary and streaming requests through Envoy, a ListModels (queue depth) and one bad request (an error code)."""
    request = orchestrator_pb2.GenerateRequest(prompt="Say hi.", sampling=types_pb2.SamplingParams(max_tokens=4))
    async with grpc.aio.insecure_channel(target) as channel:
        api = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await api.Generate(request, timeout=30)
            async for _ in api.GenerateStream(orchestrator_pb2.GenerateStreamRequest(request=request), timeout=30):
                pass
            await api.ListModels(orchestrator_pb2.ListModelsRequest(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError):
            await api.Generate(orchestrator_pb2.GenerateRequest(prompt=""), timeout=10)
        # The slow model never answers within the generation bound: the request falls back (fallbacks by reason).
        request.model_id = SLOW_MODEL
        reply = await api.Generate(request, timeout=30)
        assert [f.model_id for f in reply.provenance.fallbacks] == [SLOW_MODEL]


@pytest.fixture(scope="module")
async def prometheus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[int]:
    home = tmp_path_factory.mktemp("prometheus")
    config = fake_stack(max_concurrency=4, first_token_ms=5.0, token_ms=1.0)
    slow = ModelGroup(SLOW_MODEL, "fake", settings=(("fake_first_token_ms", "60000"), ("drain_timeout_s", "2")))
    config = replace(config, models=(*config.models, slow), orchestrator_env=(("ORCH_GENERATE_TIMEOUT_S", "2"),))
    async with Stack(config) as stack:
        port = free_port()
        config = stack.write_prometheus_config(home / "prometheus.yml")
        await stack.launch(prometheus_spec(config, port, home / "tsdb")).wait_ready()

        async def all_targets_up() -> bool:
            targets = (await asyncio.to_thread(get_json, f"http://127.0.0.1:{port}/api/v1/targets"))["data"]
            return bool(targets["activeTargets"]) and all(t["health"] == "up" for t in targets["activeTargets"])

        deadline = time.monotonic() + 30
        while not await all_targets_up():
            assert time.monotonic() < deadline, "every scrape target up within 30 s"
            await asyncio.sleep(0.5)
        await traffic(stack.envoy_target, seconds=8.0)
        await asyncio.sleep(2.0)  # two more scrapes, so the last requests are in every rate window
        yield port


@pytest.mark.parametrize(("title", "expr"), dashboard_queries(), ids=[t for t, _ in dashboard_queries()])
async def test_every_dashboard_query_returns_data_from_a_real_stack(prometheus: int, title: str, expr: str) -> None:
    assert await query(prometheus, expr), f"panel {title!r}: no data for {expr}"


async def test_the_alert_rules_load_and_stay_quiet_on_a_healthy_stack(prometheus: int) -> None:
    rules = await asyncio.to_thread(get_json, f"http://127.0.0.1:{prometheus}/api/v1/rules")
    loaded = {rule["name"] for group in rules["data"]["groups"] for rule in group["rules"]}
    assert loaded == {
        "LlmorchHighErrorRate",
        "LlmorchTaskQueueBacklogGrowing",
        "LlmorchNoServingLlm",
        "LlmorchModelStuckAtCapacity",
    }
    alerts = yaml.safe_load((PROMETHEUS_CONFIG.parent / "alerts.yml").read_text())
    no_llm = next(r["expr"] for g in alerts["groups"] for r in g["rules"] if r["alert"] == "LlmorchNoServingLlm")
    assert await query(prometheus, 'llmorch_model_serving_replicas{model_type="llm"} > 0'), "the registry publishes it"
    assert await query(prometheus, no_llm) == [], "a stack with a SERVING model raises no alert"

