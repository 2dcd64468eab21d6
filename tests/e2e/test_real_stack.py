"""The whole stack for real, through Envoy: real Temporal, orchestrator, SmolLM2, MiniLM, LanceDB, Chromium."""

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e.conftest_envoy import EnvoyProcess, running_envoy, wait_for
from helpers import (
    Orchestrator,
    ServiceProcess,
    embed_process,
    eventually,
    free_port,
    model_process,
    orchestrator_settings,
    start_orchestrator,
    stop_orchestrator,
)
from llmorch.v1 import orchestrator_pb2, types_pb2
from temporalio.client import Client

from llmorch_common.constants import DEFAULT_MODEL_ID
from orchestrator_svc.client import OrchestratorClient

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
    orchestrator: Orchestrator
    envoy: EnvoyProcess


async def run(*argv: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """In a thread: the API under test runs on this event loop and must keep serving while the tool waits."""
    return await asyncio.to_thread(
        subprocess.run, list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
    )


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    assert Path(found).exists(), f"{name} is installed by make setup"
    return found


@pytest.fixture(scope="module")
async def stack(
    temporal_client: Client, temporal_address: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp("real-stack")
    api_port = free_port()
    embed = embed_process(temporal_address, api_port, tmp)
    settings = orchestrator_settings(
        tmp, port=api_port, vector_store="lancedb", embedding_address=f"localhost:{embed.port}"
    )
    orchestrator = await start_orchestrator(temporal_client, settings)
    model = model_process(DEFAULT_MODEL_ID, temporal_address, api_port, tmp, engine="llama")
    services: list[ServiceProcess] = [await embed.start(timeout_s=120), await model.start(timeout_s=120)]

    async def serving() -> bool:
        listing = await orchestrator.stub.ListModels(orchestrator_pb2.ListModelsRequest())
        return bool(sum(m.health == types_pb2.HEALTH_STATE_SERVING for m in listing.models) == 2)

    await eventually(serving, timeout_s=30)
    async with OrchestratorClient(orchestrator.address) as client:
        await client.ensure_collection("docs")
        await client.ingest("docs", DOCS)
    with running_envoy(api_port, tmp) as envoy:
        await asyncio.to_thread(wait_for, envoy.upstream_healthy, 20, "orchestrator healthy behind Envoy")
        yield Stack(orchestrator, envoy)
    for service in services:
        await service.terminate()
    await stop_orchestrator(orchestrator)


async def test_grpcurl_through_envoy_lists_describes_and_generates(stack: Stack) -> None:
    grpcurl, target = tool("grpcurl"), stack.envoy.target
    listing = await run(grpcurl, "-plaintext", target, "list")
    assert listing.returncode == 0, listing.stderr
    assert set(listing.stdout.split()) == PUBLIC_LISTING

    described = await run(grpcurl, "-plaintext", target, "describe", "llmorch.v1.OrchestratorService")
    assert "rpc GenerateStream" in described.stdout

    body = json.dumps({"prompt": "Say hello.", "sampling": {"maxTokens": 8, "temperature": 0}})
    unary = await run(grpcurl, "-plaintext", "-d", body, target, "llmorch.v1.OrchestratorService/Generate")
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
    grpcurl, target = tool("grpcurl"), stack.envoy.target
    # Proto field names, and every field even at its default, so a leaked one cannot hide behind an empty value.
    flags = ("-plaintext", "-format-error", "-emit-defaults")
    listed = await run(grpcurl, *flags, "-d", "{}", target, "llmorch.v1.OrchestratorService/ListModels")
    assert listed.returncode == 0, listed.stderr
    models = json.loads(listed.stdout)["models"]
    assert {m["modelId"] for m in models} == {DEFAULT_MODEL_ID, "minilm-l6-v2"}
    keys = _keys(models)
    assert not {k for k in keys if "endpoint" in k.lower() or ("queue" in k.lower() and k != "queueDepth")}, keys
    assert all(m["health"] == "HEALTH_STATE_SERVING" and m["servingReplicas"] == 1 for m in models)


async def test_embed_through_envoy(stack: Stack) -> None:
    grpcurl, target = tool("grpcurl"), stack.envoy.target
    method = "llmorch.v1.OrchestratorService/Embed"
    body = json.dumps({"texts": ["The with statement wraps a block.", ""]})
    embedded = await run(grpcurl, "-plaintext", "-d", body, target, method)
    assert embedded.returncode == 0, embedded.stderr
    reply = json.loads(embedded.stdout)
    assert reply["modelId"] == "minilm-l6-v2"
    first, second = reply["embeddings"]
    assert len(first["values"]) == len(second["values"]) == 384 and first["tokenCount"] > 2
    assert abs(sum(v * v for v in first["values"]) - 1) < 1e-3

    empty = await run(grpcurl, "-plaintext", "-d", '{"texts": []}', target, method)
    assert empty.returncode != 0
    assert "InvalidArgument" in empty.stderr and "texts" in empty.stderr, empty.stderr


async def test_cli_lists_models_and_embeds_through_envoy(stack: Stack) -> None:
    cli = (sys.executable, "-m", "orchestrator_svc.cli", "--target", stack.envoy.target)
    models = await run(*cli, "models")
    assert models.returncode == 0, models.stderr
    assert f"{DEFAULT_MODEL_ID} " in models.stdout and "serving" in models.stdout
    embedded = await run(*cli, "embed", "What does yield do?")
    assert embedded.returncode == 0, embedded.stderr
    assert embedded.stdout.startswith("384-d") and "minilm-l6-v2" in embedded.stderr


async def test_health_through_envoy_and_directly_as_a_probe_would(stack: Stack) -> None:
    grpcurl = tool("grpcurl")
    for target in (stack.envoy.target, stack.orchestrator.address):
        probe = await run(grpcurl, "-plaintext", target, "grpc.health.v1.Health/Check", timeout_s=15)
        assert probe.returncode == 0, probe.stderr
        assert json.loads(probe.stdout)["status"] == "SERVING"


async def test_console_asks_a_real_model_in_chromium(stack: Stack) -> None:
    node = shutil.which("node")
    if node is None or not (WEB / "node_modules" / "playwright-core").exists() or not CHROMIUM.exists():
        pytest.fail("node, web/node_modules or Chromium missing: `make setup browser` installs them")
    screenshot = ROOT / "test-artifacts" / "console-real.png"
    question = "What does the with statement do?"
    browser = await run(node, str(WEB / "e2e" / "console.spec.mjs"), f"{stack.envoy.url}/", str(screenshot), question)
    assert browser.returncode == 0, browser.stderr
    seen = json.loads(browser.stdout.strip().splitlines()[-1])
    assert seen["problems"] == []
    assert DEFAULT_MODEL_ID in [m["id"] for m in seen["models"]]
    assert seen["model"] == DEFAULT_MODEL_ID and seen["reason"] == "default"
    assert seen["answer"].strip() and seen["deltas"] >= 1
    assert any("with-statement" in citation for citation in seen["citations"])
    if os.environ.get("LLMORCH_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(screenshot, ROOT / "docs" / "img" / "console.png")
