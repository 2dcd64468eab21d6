"""Helpers for the Envoy front-door tests: a deterministic fake OrchestratorService and a real Envoy on free ports.

The fake stands in for the orchestrator API so the Envoy mechanics (routing, gRPC-Web, CORS, health checks,
failure behaviour) can be tested without Temporal or models. It runs in its own process so a test can SIGKILL
it the way a crash would. Run directly: `python tests/e2e/conftest_envoy.py --port N` serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.envoy_config import write_config
from tools.stack import Child, envoy_spec, free_port, script_spec, tail
from tools.tls import TlsFiles

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = REPO_ROOT / ".venv" / "bin"
GRPCURL = str(VENV_BIN / "grpcurl")
WEB_DIST = REPO_ROOT / "web" / "dist"
FAKE_MODELS = ("fake-small", "fake-large")


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll `condition` until it returns a truthy value; the last exception (if any) explains a timeout."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
            last = result
        except Exception as error:
            last = error
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not reached within {timeout_s}s (last: {last!r})")


# --------------------------------------------------------------------------------------------------------------
# Fake upstream (imports grpc lazily so the test modules stay cheap to collect).


def fake_answer(prompt: str) -> list[str]:
    """The fake's deterministic answer, as the deltas it streams."""
    return ["You", " asked:", f" {prompt.strip()[:60]}.", " The", " answer", " is", " 42."]


def _build_servicers() -> tuple[Any, Any]:
    from llmorch.internal.v1 import registry_pb2, registry_pb2_grpc
    from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

    def prompt_of(request: Any) -> str:
        return request.prompt or " ".join(m.content for m in request.messages)

    def final(request: Any, request_id: str) -> Any:
        deltas = fake_answer(prompt_of(request))
        citations = []
        if request.rag.collection:
            for i in range(request.rag.top_k or 5):
                citations.append(
                    types_pb2.Citation(
                        chunk_id=f"doc-{i}#0", source=f"doc-{i}", score=0.9 - i / 10, text=f"chunk {i} text"
                    )
                )
        model_id = request.model_id or FAKE_MODELS[0]
        fallbacks = [] if request.model_id else [types_pb2.Fallback(model_id="fake-broken", reason="injected")]
        return orchestrator_pb2.GenerateResponse(
            request_id=request_id,
            text="".join(deltas),
            finish_reason=types_pb2.FINISH_REASON_STOP,
            provenance=types_pb2.Provenance(
                model_id=model_id,
                selection_reason="user-specified" if request.model_id else "default",
                fallbacks=fallbacks,
                usage=types_pb2.Usage(prompt_tokens=len(prompt_of(request).split()), completion_tokens=len(deltas)),
                timings=types_pb2.Timings(total_ms=12.0, time_to_first_token_ms=3.0),
                citations=citations,
                workflow_id=f"wf-{request_id}",
            ),
        )

    class FakeOrchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):  # type: ignore[misc]
        async def Generate(self, request: Any, context: Any) -> Any:
            return final(request, request.request_id or "req-unary")

        async def GenerateStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
            inner = request.request
            request_id = inner.request_id or "req-stream"
            yield orchestrator_pb2.GenerateStreamResponse(
                request_id=request_id,
                selected=orchestrator_pb2.ModelSelected(
                    model_id=inner.model_id or FAKE_MODELS[0], reason="default", attempt=1
                ),
            )
            for delta in fake_answer(prompt_of(inner)):
                # Spaced out so a browser can observe the answer growing before it completes.
                await asyncio.sleep(0.08)
                yield orchestrator_pb2.GenerateStreamResponse(request_id=request_id, delta=delta)
            yield orchestrator_pb2.GenerateStreamResponse(request_id=request_id, completed=final(inner, request_id))

        async def ListModels(self, request: Any, context: Any) -> Any:
            models = []
            for i, model_id in enumerate(FAKE_MODELS):
                models.append(
                    orchestrator_pb2.Model(
                        model_id=model_id,
                        model_type=types_pb2.MODEL_TYPE_LLM,
                        is_default=i == 0,
                        context_limit=2048,
                        health=types_pb2.HEALTH_STATE_SERVING if i == 0 else types_pb2.HEALTH_STATE_NOT_SERVING,
                        capacity=2 if i == 0 else 0,
                    )
                )
            return orchestrator_pb2.ListModelsResponse(models=models)

    class FakeRegistry(registry_pb2_grpc.RegistryServiceServicer):  # type: ignore[misc]
        """Present on the upstream so a test can prove Envoy, not the upstream, keeps it private."""

        async def ListModels(self, request: Any, context: Any) -> Any:
            return registry_pb2.ListModelsResponse()

    # Only the RPCs the front-door tests call are implemented; the rest answer UNIMPLEMENTED.
    return FakeOrchestrator(), FakeRegistry()  # type: ignore[abstract]


async def serve_fake(port: int) -> None:
    from llmorch.internal.v1 import registry_pb2_grpc
    from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc

    from llmorch_common.constants import READINESS_SERVICE
    from llmorch_common.grpc_edge import create_server, set_serving

    orchestrator, registry = _build_servicers()

    def register(server: Any) -> list[str]:
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(orchestrator, server)
        # Served here but never named to reflection, as a stand-in for the control plane Envoy must not route to.
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(registry, server)
        return [orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"].full_name]

    server, bound, health_servicer = await create_server(register, port, host="127.0.0.1")
    await server.start()
    await set_serving(health_servicer, ["llmorch.v1.OrchestratorService", READINESS_SERVICE], True)
    print(f"fake orchestrator serving on {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # SIGUSR1 flips the health status, the way a draining or not-yet-ready orchestrator would report.
    serving = [True]
    pending: set[asyncio.Task[None]] = set()

    def flip() -> None:
        serving[0] = not serving[0]
        task = loop.create_task(
            set_serving(health_servicer, ["llmorch.v1.OrchestratorService", READINESS_SERVICE], serving[0])
        )
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGUSR1, flip)
    await stop.wait()
    await server.stop(0.5)


@dataclass
class FakeUpstream:
    """The fake orchestrator in a child process, on a fixed port so it can come back at the same address."""

    port: int
    workdir: Path
    child: Child | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        spec = script_spec("fake-orchestrator", (sys.executable, __file__, "--port", str(self.port)))
        log = self.workdir / f"fake-orchestrator-{self.port}.log"
        offset = log.stat().st_size if log.exists() else 0  # a restart appends; read only its own lines
        self.child = Child(spec, log).spawn()

        def serving() -> bool:
            reason = self.child.exit_reason() if self.child else "not started"
            if reason:
                raise RuntimeError(f"fake orchestrator failed to start: {reason}")
            return "serving" in log.read_text(errors="replace")[offset:]

        wait_for(serving, timeout_s, "fake orchestrator serving")

    def flip_health(self) -> None:
        """Toggle the fake between SERVING and NOT_SERVING (it keeps answering RPCs either way)."""
        assert self.child is not None
        self.child.signal(signal.SIGUSR1)

    def kill(self) -> None:
        if self.child:
            self.child.kill()
        self.child = None

    def stop(self) -> None:
        if self.child:
            self.child.stop(5)
        self.child = None


@contextlib.contextmanager
def fake_upstream(workdir: Path) -> Iterator[FakeUpstream]:
    upstream = FakeUpstream(free_port(), workdir)
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()


# --------------------------------------------------------------------------------------------------------------
# Envoy


@dataclass
class EnvoyProcess:
    listen_port: int
    admin_port: int
    config_path: Path
    child: Child
    tls: TlsFiles | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.listen_port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.listen_port}"

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=2) as reply:
            return str(reply.read().decode())

    def log(self) -> str:
        return tail(self.child.log, 200) if self.child.log else ""

    def upstream_healthy(self) -> bool:
        """True once the orchestrator cluster's host has passed active health checking."""
        clusters = self.admin("/clusters")
        flags = [line for line in clusters.splitlines() if line.startswith("orchestrator::") and "health_flags" in line]
        return bool(flags) and all(line.endswith("::healthy") for line in flags)


@contextlib.contextmanager
def running_envoy(
    orchestrator_port: int, workdir: Path, web_dir: Path = WEB_DIST, tls: TlsFiles | None = None
) -> Iterator[EnvoyProcess]:
    """Envoy as the stack runs it (tools/stack.envoy_spec), in front of `orchestrator_port`; TLS only with `tls`."""
    listen_port, admin_port = free_port(), free_port()
    certificate = (tls.cert, tls.key) if tls else None
    config = write_config(workdir / "envoy.yaml", orchestrator_port, listen_port, admin_port, web_dir, tls=certificate)
    spec = envoy_spec(config, listen_port, admin_port, concurrency=1, tls_ca=tls.ca if tls else None)
    child = Child(spec, workdir / "envoy.log").spawn()
    envoy = EnvoyProcess(listen_port, admin_port, config, child, tls)
    try:

        def ready() -> bool:
            reason = child.exit_reason()
            if reason:
                raise RuntimeError(reason)
            return envoy.admin("/ready").strip() == "LIVE"

        wait_for(ready, 20, "envoy LIVE")
        yield envoy
    finally:
        child.stop(5)


def grpcurl(*args: str, timeout_s: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=timeout_s, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description="fake OrchestratorService for Envoy tests")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    os.chdir(REPO_ROOT)
    asyncio.run(serve_fake(args.port))


if __name__ == "__main__":
    main()
