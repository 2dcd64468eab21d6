"""The whole stack as `make up` starts it, for real, through Envoy: Temporal, orchestrator, SmolLM2, Gemma, MiniLM,
LanceDB, Chromium; and its supervisor bringing a killed model back."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_every_public_rpc_refuses, eventually
from llmorch.v1 import orchestrator_pb2, types_pb2

from llmorch_client.client import OrchestratorClient
from llmorch_common.constants import DEFAULT_MODEL_ID, EMBEDDING_MODEL_ID, SECOND_MODEL_ID
from tools.stack import TEMPORAL_DEV_SERVER_ARGS, LocalStackSettings

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
# Everything `grpcurl list` may show through the front door: the public API, health and reflection.
PUBLIC_LISTING = {
    "llmorch.v1.OrchestratorService",
    "llmorch.v1.RetrievalService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}
DOCS = {
    "with-statement": "The with statement wraps a block with methods of a context manager: __enter__ runs before "
    "the block and __exit__ runs after it, even when the block raises an exception.",
    "yield": "A yield expression inside a function makes it a generator function that produces values lazily.",
    "bread": "Bread is baked from flour, water and yeast.",
}


@dataclass
class Stack:
    """The stack as `make up` leaves it running: tools.launcher in a temporary home, on free ports."""

    home: Path
    env: dict[str, str]

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads((self.home / "run" / "stack.json").read_text())
        return state

    def port(self, name: str) -> int:
        return int(self.state()["ports"][name])

    @property
    def envoy_target(self) -> str:
        return f"127.0.0.1:{self.port('envoy')}"

    @property
    def envoy_url(self) -> str:
        return f"http://{self.envoy_target}"

    @property
    def api_target(self) -> str:
        return f"127.0.0.1:{self.port('api')}"

    @property
    def api_key(self) -> str:
        return LocalStackSettings(home=self.home).dev_key()

    @property
    def auth(self) -> tuple[str, str]:
        """grpcurl's flag for the dev key."""
        return ("-H", f"authorization: Bearer {self.api_key}")

    async def launcher(self, command: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
        return await run(sys.executable, "-m", "tools.launcher", command, env=self.env, timeout_s=timeout_s)


async def run(
    *argv: str, env: dict[str, str] | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """In a thread, so the event loop keeps serving whatever else this test runs."""
    return await asyncio.to_thread(
        subprocess.run, list(argv), capture_output=True, text=True, timeout=timeout_s, check=False, cwd=ROOT, env=env
    )


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    assert Path(found).exists(), f"{name} is installed by make setup"
    return found


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    home = tmp_path_factory.mktemp("make-up")
    env = {**os.environ, "LLMORCH_STACK_HOME": str(home), "LLMORCH_STACK_FREE_PORTS": "true"}
    launched = Stack(home, env)
    up = await launched.launcher("up")
    try:
        assert up.returncode == 0, f"{up.stdout}\n{up.stderr}"
        async with OrchestratorClient(launched.api_target, launched.api_key) as client:
            await client.ensure_collection("docs")
            await client.ingest("docs", DOCS)
        yield launched
    finally:
        processes = launched.state()["processes"] if (home / "run" / "stack.json").exists() else {}
        down = await launched.launcher("down", timeout_s=180)
        assert down.returncode == 0, down.stderr
        assert not [name for name, p in processes.items() if Path(f"/proc/{p['pid']}").exists()], "all stopped"


def cmdline(pid: int) -> list[str]:
    return [part.decode() for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if part]


def descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found


def test_make_up_runs_the_dev_server_with_the_stack_flags(stack: Stack) -> None:
    """The argv of the process that really listens, read from /proc, carries the tuning (issue: make up was untuned)."""
    pid = stack.state()["processes"]["temporal"]["pid"]
    servers = [p for p in [pid, *descendants(pid)] if "start-dev" in cmdline(p)]
    assert servers, cmdline(pid)
    for server in servers:
        argv = cmdline(server)
        flags = [argv[i : i + 2] for i in range(len(argv) - 1)]
        assert list(TEMPORAL_DEV_SERVER_ARGS) in flags, argv
        assert ["--db-filename", str(stack.home / "temporal.db")] in flags, argv
        assert ["--sqlite-pragma", "journal_mode=wal"] in flags, argv
    # SQLite keeps the write-ahead log beside the database only when the server really opened it in WAL mode.
    assert (stack.home / "temporal.db-wal").exists(), sorted(p.name for p in stack.home.iterdir())


async def test_grpcurl_through_envoy_lists_describes_and_generates(stack: Stack) -> None:
    grpcurl, target = tool("grpcurl"), stack.envoy_target
    listing = await run(grpcurl, "-plaintext", target, "list")
    assert listing.returncode == 0, listing.stderr
    assert set(listing.stdout.split()) == PUBLIC_LISTING

    described = await run(grpcurl, "-plaintext", target, "describe", "llmorch.v1.OrchestratorService")
    assert "rpc GenerateStream" in described.stdout

    body = json.dumps({"prompt": "Say hello.", "sampling": {"maxTokens": 8, "temperature": 0}})
    unary = await run(grpcurl, "-plaintext", *stack.auth, "-d", body, target, "llmorch.v1.OrchestratorService/Generate")
    assert unary.returncode == 0, unary.stderr
    assert json.loads(unary.stdout)["provenance"]["modelId"] == DEFAULT_MODEL_ID

    request = {
        "messages": [{"role": "user", "content": "What does the with statement do?"}],
        "rag": {"collection": "docs", "topK": 2},
        "sampling": {"maxTokens": 24, "temperature": 0},
    }
    streamed = await run(
        grpcurl,
        "-plaintext",
        *stack.auth,
        "-d",
        json.dumps({"request": request}),
        target,
        "llmorch.v1.OrchestratorService/GenerateStream",
    )
    assert streamed.returncode == 0, streamed.stderr
    events = [json.loads(chunk) for chunk in streamed.stdout.replace("}\n{", "}\x00{").split("\x00")]
    assert "selected" in events[0] and "completed" in events[-1]
    deltas = "".join(e.get("delta", "") for e in events)
    completed = events[-1]["completed"]
    assert deltas == completed["text"] and deltas.strip()
    assert completed["provenance"]["citations"][0]["source"] == "with-statement"


def _keys(value: object) -> set[str]:
    """Every key anywhere in a JSON document."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    return set()


async def test_public_listing_hides_endpoints_and_task_queues(stack: Stack) -> None:
    grpcurl, target = tool("grpcurl"), stack.envoy_target
    # Proto field names, and every field even at its default, so a leaked one cannot hide behind an empty value.
    flags = ("-plaintext", *stack.auth, "-format-error", "-emit-defaults")
    listed = await run(grpcurl, *flags, "-d", "{}", target, "llmorch.v1.OrchestratorService/ListModels")
    assert listed.returncode == 0, listed.stderr
    models = json.loads(listed.stdout)["models"]
    assert {m["modelId"] for m in models} == {DEFAULT_MODEL_ID, SECOND_MODEL_ID, EMBEDDING_MODEL_ID}
    keys = _keys(models)
    assert not {k for k in keys if "endpoint" in k.lower() or ("queue" in k.lower() and k != "queueDepth")}, keys
    assert all(m["health"] == "HEALTH_STATE_SERVING" and m["servingReplicas"] == 1 for m in models)


async def test_embed_through_envoy(stack: Stack) -> None:
    grpcurl, target = tool("grpcurl"), stack.envoy_target
    method = "llmorch.v1.OrchestratorService/Embed"
    body = json.dumps({"texts": ["The with statement wraps a block.", ""]})
    embedded = await run(grpcurl, "-plaintext", *stack.auth, "-d", body, target, method)
    assert embedded.returncode == 0, embedded.stderr
    reply = json.loads(embedded.stdout)
    assert reply["modelId"] == "minilm-l6-v2"
    first, second = reply["embeddings"]
    assert len(first["values"]) == len(second["values"]) == 384 and first["tokenCount"] > 2
    assert abs(sum(v * v for v in first["values"]) - 1) < 1e-3

    empty = await run(grpcurl, "-plaintext", *stack.auth, "-d", '{"texts": []}', target, method)
    assert empty.returncode != 0
    assert "InvalidArgument" in empty.stderr and "texts" in empty.stderr, empty.stderr


async def test_cli_lists_models_and_embeds_through_envoy(stack: Stack) -> None:
    cli = (sys.executable, "-m", "llmorch_client.cli", "--target", stack.envoy_target, "--api-key", stack.api_key)
    models = await run(*cli, "models")
    assert models.returncode == 0, models.stderr
    assert f"{DEFAULT_MODEL_ID} " in models.stdout and "serving" in models.stdout
    embedded = await run(*cli, "embed", "What does yield do?")
    assert embedded.returncode == 0, embedded.stderr
    assert embedded.stdout.startswith("384-d") and "minilm-l6-v2" in embedded.stderr


async def test_health_through_envoy_and_directly_as_a_probe_would(stack: Stack) -> None:
    grpcurl = tool("grpcurl")
    for target in (stack.envoy_target, stack.api_target):
        probe = await run(grpcurl, "-plaintext", target, "grpc.health.v1.Health/Check", timeout_s=15)
        assert probe.returncode == 0, probe.stderr
        assert json.loads(probe.stdout)["status"] == "SERVING"


async def test_console_asks_a_real_model_in_chromium(stack: Stack) -> None:
    node = shutil.which("node")
    if node is None or not (WEB / "node_modules" / "playwright-core").exists() or not CHROMIUM.exists():
        pytest.fail("node, web/node_modules or Chromium missing: `make setup debian` installs them")
    screenshot = ROOT / "test-artifacts" / "console-real.png"
    question = "What does the with statement do?"
    spec = str(WEB / "e2e" / "console.spec.mjs")
    browser = await run(node, spec, f"{stack.envoy_url}/", str(screenshot), question, stack.api_key)
    assert browser.returncode == 0, browser.stderr
    seen = json.loads(browser.stdout.strip().splitlines()[-1])
    assert seen["problems"] == []
    assert DEFAULT_MODEL_ID in [m["id"] for m in seen["models"]]
    assert seen["model"] == DEFAULT_MODEL_ID and seen["reason"] == "default"
    assert seen["answer"].strip() and seen["deltas"] >= 1
    assert any("with-statement" in citation for citation in seen["citations"])
    if os.environ.get("LLMORCH_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(screenshot, ROOT / "docs" / "img" / "console.png")


async def test_a_killed_model_comes_back_by_itself_and_status_reports_it(stack: Stack) -> None:
    """Last in this module: it kills a process. The supervisor restarts it; the bench reports the real figure."""
    name = f"model-{DEFAULT_MODEL_ID}-0"
    killed = stack.state()["processes"][name]["pid"]
    os.killpg(killed, signal.SIGKILL)

    async def restarted() -> bool:
        process = stack.state()["processes"][name]
        return bool(process["pid"] != killed and process["restarts"] == 1)

    await eventually(restarted, timeout_s=60, interval_s=0.2)

    async def serving_again() -> bool:
        async with OrchestratorClient(stack.api_target, stack.api_key) as client:
            reply = await client.generate(
                orchestrator_pb2.GenerateRequest(
                    prompt="Say hi.", model_id=DEFAULT_MODEL_ID, sampling=types_pb2.SamplingParams(max_tokens=2)
                ),
                timeout_s=30,
            )
        return reply.provenance.model_id == DEFAULT_MODEL_ID

    await eventually(serving_again, timeout_s=60, interval_s=0.5)
    status = await stack.launcher("status", timeout_s=30)
    line = next(line for line in status.stdout.splitlines() if name in line)
    assert "up" in line.split() and "restarts 1" in " ".join(line.split()), status.stdout


async def test_every_public_rpc_needs_a_key_through_envoy(stack: Stack) -> None:
    await assert_every_public_rpc_refuses(stack.envoy_target)
