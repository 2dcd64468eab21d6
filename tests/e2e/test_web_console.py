"""The web console in headless Chromium (over plain HTTP and over TLS with a trusted local CA), and a Node gRPC
client, all through a real Envoy to a fake orchestrator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.conftest_envoy import REPO_ROOT, EnvoyProcess, fake_answer, fake_upstream, running_envoy, wait_for

from tools.tls import issue

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


@pytest.fixture(scope="module")
def tls_envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyProcess]:
    """The same Envoy with a certificate from a throwaway local CA: its public listener speaks TLS only."""
    workdir = tmp_path_factory.mktemp("envoy-tls")
    tls = issue(workdir / "tls")
    with fake_upstream(workdir) as upstream, running_envoy(upstream.port, workdir, tls=tls) as proxy:
        wait_for(proxy.upstream_healthy, 15, "orchestrator cluster healthy")
        yield proxy


def _console(url: str, screenshot: Path, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """web/e2e/console.spec.mjs in headless Chromium; `home` is the HOME whose NSS database Chromium trusts."""
    node = _require_node_modules()
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing: run `tools/install_browser.sh` first")
    screenshot.unlink(missing_ok=True)
    return subprocess.run(
        [node, str(WEB / "e2e" / "console.spec.mjs"), url, str(screenshot), QUESTION],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={**os.environ, "HOME": str(home)} if home else None,
    )


def _home_trusting(ca: Path, home: Path) -> Path:
    """A HOME whose NSS database (Chromium's trust store on Linux) holds `ca` as a trusted TLS issuer, the way a
    user trusts a private CA: no flag tells the browser to skip verification."""
    certutil = shutil.which("certutil")
    if certutil is None:
        pytest.skip("certutil missing: run `make debian` (Debian libnss3-tools)")
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    for args in (["-N", "--empty-password"], ["-A", "-t", "C,,", "-n", "llmorch test CA", "-i", str(ca)]):
        subprocess.run([certutil, "-d", f"sql:{nssdb}", *args], check=True, capture_output=True, timeout=30)
    return home


def _assert_console_answered(run: subprocess.CompletedProcess[str], envoy: EnvoyProcess, screenshot: Path) -> None:
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


def test_console_streams_an_answer_in_chromium(envoy: EnvoyProcess) -> None:
    screenshot = ARTIFACTS / "console.png"
    _assert_console_answered(_console(f"{envoy.url}/", screenshot), envoy, screenshot)
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


def test_console_over_tls_with_the_ca_trusted(tls_envoy: EnvoyProcess, tmp_path: Path) -> None:
    """The page, its script and every gRPC-Web call come over https; the browser verifies the certificate."""
    assert tls_envoy.tls is not None and tls_envoy.url.startswith("https://")
    screenshot = ARTIFACTS / "console-tls.png"
    home = _home_trusting(tls_envoy.tls.ca, tmp_path / "home")
    _assert_console_answered(_console(f"{tls_envoy.url}/", screenshot, home), tls_envoy, screenshot)


def test_console_over_tls_refused_without_the_ca(tls_envoy: EnvoyProcess, tmp_path: Path) -> None:
    """The same browser with an empty trust store stops at the certificate: the trust above is what made it work."""
    home = tmp_path / "home"
    home.mkdir()
    run = _console(f"{tls_envoy.url}/", tmp_path / "unused.png", home)
    assert run.returncode != 0
    assert "ERR_CERT_AUTHORITY_INVALID" in run.stdout + run.stderr, run.stderr[-2000:]


def test_plain_http_to_the_tls_listener_gets_no_console(tls_envoy: EnvoyProcess) -> None:
    """TLS only: a plaintext request to the public port gets no page (no downgrade path)."""
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{tls_envoy.target}/", timeout=5).read()
