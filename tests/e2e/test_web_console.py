"""The web console in headless Chromium, and a Node gRPC client, both through a real Envoy to a fake orchestrator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.conftest_envoy import REPO_ROOT, EnvoyProcess, fake_answer, fake_upstream, running_envoy, wait_for

WEB = REPO_ROOT / "web"
NODE_MODULES = WEB / "node_modules"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
ARTIFACTS = REPO_ROOT / "test-artifacts"
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "img" / "console.png"
QUESTION = "What does the with statement do?"


def _require_node_modules() -> str:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / ".bin" / "esbuild").exists():
        pytest.skip("node or web/node_modules missing: run `web/build.sh` (npm ci) first")
    return node


@pytest.fixture(scope="module")
def envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyProcess]:
    workdir = tmp_path_factory.mktemp("envoy")
    with fake_upstream(workdir) as upstream, running_envoy(upstream.port, workdir) as proxy:
        wait_for(proxy.upstream_healthy, 15, "orchestrator cluster healthy")
        yield proxy


def test_console_streams_an_answer_in_chromium(envoy: EnvoyProcess) -> None:
    node = _require_node_modules()
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing: run `tools/install_browser.sh` first")
    screenshot = ARTIFACTS / "console.png"
    screenshot.unlink(missing_ok=True)
    run = subprocess.run(
        [node, str(WEB / "e2e" / "console.spec.mjs"), f"{envoy.url}/", str(screenshot), QUESTION],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n--- envoy ---\n{envoy.log()[-3000:]}"
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    expected = "".join(fake_answer(QUESTION))

    assert seen["problems"] == []
    # The key typed in survives a reload (the page's storage) and goes with every call after it.
    assert seen["keptKey"] == "llmo_console_test_key"
    assert "Bearer llmo_console_test_key" in seen["authorizations"]
    # Model list with live health, from ListModels over gRPC-Web.
    assert [m["id"] for m in seen["models"]] == ["fake-small", "fake-large"]
    assert "not serving" in seen["models"][1]["text"]
    assert seen["modelOptions"] == ["", "fake-small", "fake-large"]
    # Deltas were on screen before the final answer; the final answer replaced nothing it should not.
    partial = seen["streamedMidway"]
    assert all(expected.startswith(text) for text in partial), partial
    assert len({text for text in partial if text != expected}) >= 2, partial
    assert partial == sorted(partial, key=len), "the answer only ever grows while streaming"
    assert seen["deltas"] == len(fake_answer(QUESTION))
    assert seen["answer"] == expected
    # Provenance and citations.
    assert seen["model"] == "fake-small"
    assert seen["reason"] == "default"
    assert "fake-broken" in seen["fallbacks"]
    assert "completion tokens" in seen["usage"]
    assert len(seen["citations"]) == 3 and "doc-0#0" in seen["citations"][0]
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("LLMORCH_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, DOCS_SCREENSHOT)


def test_node_grpc_client_through_envoy(envoy: EnvoyProcess, tmp_path: Path) -> None:
    node = _require_node_modules()
    bundle = tmp_path / "node_client.mjs"
    build = subprocess.run(
        [
            str(NODE_MODULES / ".bin" / "esbuild"),
            "e2e/node_client.ts",
            "--bundle",
            "--platform=node",
            "--format=esm",
            "--log-level=warning",
            f"--outfile={bundle}",
        ],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    run = subprocess.run([node, str(bundle), envoy.url], capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    assert seen["requestId"] == "node-1"
    assert seen["text"] == "".join(fake_answer("hello from node"))
    assert seen["model"] == "fake-small"
    assert seen["citations"] == ["doc-0#0", "doc-1#0"]
    assert seen["events"] == ["selected"] + ["delta"] * len(fake_answer("hello from node")) + ["completed"]
    assert seen["models"] == ["fake-small", "fake-large"]
