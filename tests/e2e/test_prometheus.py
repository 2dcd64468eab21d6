"""A real Prometheus (Debian's) scrapes a real stack with the project's own scrape config: every Grafana panel's
query returns data, the config and the alert rules pass promtool, and the alert rules pass their unit tests."""

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator

import pytest
import yaml  # type: ignore[import-untyped]

from tools.dashboard import dashboard_panels, get_json, observed_stack, query
from tools.stack import PROMETHEUS_CONFIG

pytestmark = pytest.mark.slow


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    assert found, "promtool comes with Debian's prometheus package: `make setup debian` installs it"
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=60, check=False)


def dashboard_queries() -> list[tuple[str, str]]:
    return [(panel.title, expr) for panel in dashboard_panels() for expr, _ in panel.targets]


def test_promtool_accepts_the_config_and_the_rules() -> None:
    checked = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "4 rules found" in checked.stdout


def test_alert_rules_pass_their_unit_tests() -> None:
    tested = promtool("test", "rules", str(PROMETHEUS_CONFIG.parent / "alerts_test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@pytest.fixture(scope="module")
async def prometheus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[int]:
    async with observed_stack(tmp_path_factory.mktemp("prometheus")) as (_, port):
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
