"""The local stack as real processes on free ports, the way tools/launcher.py starts it: Temporal dev server,
orchestrator API and worker, model replicas (`python -m model_svc`) and Envoy. The load generator (this process)
never shares an event loop with any of them."""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

from llmorch_common.constants import DEFAULT_MODEL_ID, TEMPORAL_DEV_SERVER_ARGS
from llmorch_common.grpc_edge import wait_until_serving
from tools.envoy_config import write_config

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class StackConfig:
    replicas: int = 1
    engine: str = "fake"
    model_id: str = DEFAULT_MODEL_ID
    max_concurrency: int = 32
    fake_first_token_ms: float = 20.0
    fake_token_ms: float = 2.0
    envoy: bool = True
    # Extra `temporal server start-dev` flags, e.g. ["--dynamic-config-value", "KEY=VALUE"].
    temporal_args: tuple[str, ...] = ()
    # The launcher's dev-server tuning (TEMPORAL_DEV_SERVER_ARGS); off measures the server's defaults.
    temporal_tuned: bool = True
    temporal_db_file: bool = False  # the launcher's SQLite file instead of the dev server's in-memory store
    model_env: tuple[tuple[str, str], ...] = ()
    label: str = "default"
    orchestrator_env: tuple[tuple[str, str], ...] = ()  # extra ORCH_* settings for the API and the worker


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Stack:
    config: StackConfig
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="llmorch-bench-")))
    children: list[Child] = field(default_factory=list)
    temporal_port: int = 0
    api_port: int = 0
    envoy_port: int = 0
    model_ports: list[int] = field(default_factory=list)

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    @property
    def api_target(self) -> str:
        return f"127.0.0.1:{self.api_port}"

    @property
    def envoy_target(self) -> str:
        return f"127.0.0.1:{self.envoy_port}"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        log = self.work / f"{name}.log"
        handle = log.open("ab")
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
            stdout=handle,
            stderr=handle,
            start_new_session=True,
        )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    async def _wait_grpc(self, child: Child, port: int) -> None:
        def exit_reason() -> str | None:
            if child.process.poll() is None:
                return None
            return f"{child.name} exited ({child.process.returncode}):\n{tail(child.log)}"

        await wait_until_serving(f"127.0.0.1:{port}", STARTUP_TIMEOUT_S, exited=exit_reason)

    async def _wait_tcp(self, child: Child, port: int) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited ({child.process.returncode}):\n{tail(child.log)}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"{child.name}: nothing listens on {port}")

    async def start_temporal(self) -> None:
        c = self.config
        self.temporal_port = free_port()
        argv = [
            str(BIN / "temporal"),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.temporal_port),
            "--http-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--log-level",
            "error",
            *(TEMPORAL_DEV_SERVER_ARGS if c.temporal_tuned else ()),
            *c.temporal_args,
        ]
        if c.temporal_db_file:
            argv += ["--db-filename", str(self.work / "temporal.db")]
        temporal = self._spawn("temporal", argv)
        await self._wait_tcp(temporal, self.temporal_port)

    def orchestrator_env(self) -> dict[str, str]:
        return {
            "ORCH_HOST": "127.0.0.1",
            "ORCH_PORT": str(self.api_port),
            "ORCH_METRICS_PORT": "0",
            "ORCH_WORKER_METRICS_PORT": "0",
            "ORCH_TEMPORAL_METRICS_PORT": "0",
            "ORCH_TEMPORAL_ADDRESS": self.temporal_address,
            "ORCH_REGISTRY_DB": str(self.work / "registry.db"),
            "ORCH_REGISTRY_ADDRESS": self.api_target,
            "ORCH_VECTOR_STORE": "memory",  # no RAG requests here; nothing to share between API and worker
            "ORCH_STAGING_DB": str(self.work / "ingestion.db"),
            "ORCH_EMBEDDING_ADDRESS": "127.0.0.1:1",
        }

    def model_env(self, port: int) -> dict[str, str]:
        c = self.config
        return {
            "MODEL_MODEL_ID": c.model_id,
            "MODEL_ENGINE": c.engine,
            "MODEL_HOST": "127.0.0.1",
            "MODEL_ADVERTISE_HOST": "127.0.0.1",
            "MODEL_PORT": str(port),
            "MODEL_METRICS_PORT": "0",
            "MODEL_TEMPORAL_ADDRESS": self.temporal_address,
            "MODEL_REGISTRY_ADDRESS": self.api_target,
            "MODEL_MAX_CONCURRENCY": str(c.max_concurrency),
            "MODEL_FAKE_FIRST_TOKEN_MS": str(c.fake_first_token_ms),
            "MODEL_FAKE_TOKEN_MS": str(c.fake_token_ms),
            "MODEL_DRAIN_TIMEOUT_S": "2",
            **dict(c.model_env),
        }

    async def start(self) -> "Stack":
        c = self.config
        await self.start_temporal()

        self.api_port = free_port()
        env = {**self.orchestrator_env(), **dict(c.orchestrator_env)}
        api = self._spawn("api", [sys.executable, "-m", "orchestrator_svc", "api"], env)
        self._spawn("worker", [sys.executable, "-m", "orchestrator_svc", "worker"], env)
        await self._wait_grpc(api, self.api_port)

        models = []
        for index in range(c.replicas):
            port = free_port()
            self.model_ports.append(port)
            models.append(
                (self._spawn(f"model-{index}", [sys.executable, "-m", "model_svc"], self.model_env(port)), port)
            )
        for child, port in models:
            await self._wait_grpc(child, port)

        if c.envoy:
            self.envoy_port = free_port()
            config = write_config(
                self.work / "envoy.yaml",
                orchestrator_port=self.api_port,
                listen_port=self.envoy_port,
                admin_port=free_port(),
            )
            envoy = self._spawn(
                "envoy",
                [
                    str(BIN / "envoy"),
                    "-c",
                    str(config),
                    "--disable-hot-restart",
                    "--concurrency",
                    "2",
                    "--log-level",
                    "warn",
                ],
            )
            await self._wait_grpc(envoy, self.envoy_port)
        await self.wait_registered()
        return self

    def cpu_seconds(self) -> dict[str, float]:
        """User+system CPU each child has used so far (from /proc), to see which process a request's cost lands in."""
        ticks = os.sysconf("SC_CLK_TCK")
        usage: dict[str, float] = {}
        for child in self.children:
            try:
                fields = Path(f"/proc/{child.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # Fields 14-17 of stat (utime, stime, cutime, cstime), counted after the ")" that ends the name.
            name = "model" if child.name.startswith("model-") else child.name
            usage[name] = usage.get(name, 0.0) + sum(int(v) for v in fields[11:15]) / ticks
        return usage

    async def wait_registered(self, timeout_s: float = 60.0) -> None:
        """Every replica registered and SERVING, so the router sees the whole capacity."""
        c = self.config
        deadline = time.monotonic() + timeout_s
        async with grpc.aio.insecure_channel(self.api_target) as channel:
            api = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            while time.monotonic() < deadline:
                listing = await api.ListModels(orchestrator_pb2.ListModelsRequest(), timeout=5)
                for model in listing.models:
                    if (
                        model.model_id == c.model_id
                        and model.health == types_pb2.HEALTH_STATE_SERVING
                        and model.capacity >= c.max_concurrency * c.replicas
                    ):
                        return
                await asyncio.sleep(0.2)
        raise TimeoutError(f"{c.replicas} replica(s) of {c.model_id} not registered and SERVING")

    async def stop(self) -> None:
        # Reverse order, as `make down`: models drain while the API and Temporal are still there.
        for child in reversed(self.children):
            if child.process.poll() is None:
                os.killpg(child.process.pid, signal.SIGTERM)
                deadline = time.monotonic() + 15
                while child.process.poll() is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                if child.process.poll() is None:
                    os.killpg(child.process.pid, signal.SIGKILL)
                    child.process.wait(5)
        self.children.clear()
        shutil.rmtree(self.work, ignore_errors=True)

    async def __aenter__(self) -> "Stack":
        try:
            return await self.start()
        except BaseException:
            await self.stop_keep_logs()
            raise

    async def stop_keep_logs(self) -> None:
        logs = {child.name: tail(child.log) for child in self.children}
        await self.stop()
        for name, text in logs.items():
            if text:
                print(f"--- {name} log tail ---\n{text}", file=sys.stderr)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await (self.stop_keep_logs() if error else self.stop())


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
