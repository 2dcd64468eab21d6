"""Local launcher: `up` starts the whole stack in the background, `down` stops it, `demo` asks it a question."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmorch_common import constants as c
from llmorch_common.grpc_edge import wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
RUN_DIR = DATA / "run"
LOG_DIR = DATA / "logs"
BIN = Path(sys.executable).parent
STARTUP_TIMEOUT_S = 180


@dataclass(frozen=True)
class Process:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    grpc_port: int | None = None  # waited on through grpc.health.v1
    tcp_port: int | None = None  # waited on by connecting, for processes without gRPC health
    info: str = ""


def stack() -> list[Process]:
    py = sys.executable
    model = [py, "-m", "model_svc"]
    processes = [
        Process(
            "temporal",
            [
                str(BIN / "temporal"),
                "server",
                "start-dev",
                "--db-filename",
                str(DATA / "temporal.db"),
                "--port",
                str(c.TEMPORAL_PORT),
                "--ui-port",
                str(c.TEMPORAL_UI_PORT),
                "--log-level",
                "error",
            ],
            tcp_port=c.TEMPORAL_PORT,
            info=f"Temporal gRPC localhost:{c.TEMPORAL_PORT}, UI http://localhost:{c.TEMPORAL_UI_PORT}",
        ),
        Process(
            "orchestrator-api",
            [py, "-m", "orchestrator_svc", "api"],
            grpc_port=c.ORCHESTRATOR_PORT,
            info=f"API grpc localhost:{c.ORCHESTRATOR_PORT}, metrics :{c.ORCHESTRATOR_METRICS_PORT}",
        ),
        Process(
            "orchestrator-worker",
            [py, "-m", "orchestrator_svc", "worker"],
            info=f"worker on task queue {c.ORCHESTRATOR_TASK_QUEUE}, metrics :{c.ORCHESTRATOR_WORKER_METRICS_PORT}",
        ),
        Process(
            f"model-{c.DEFAULT_MODEL_ID}",
            model,
            env={
                "MODEL_MODEL_ID": c.DEFAULT_MODEL_ID,
                "MODEL_PORT": str(c.MODEL_BASE_PORT),
                "MODEL_METRICS_PORT": str(c.MODEL_BASE_METRICS_PORT),
            },
            grpc_port=c.MODEL_BASE_PORT,
            info=f"ModelService localhost:{c.MODEL_BASE_PORT}, queue {c.llm_task_queue(c.DEFAULT_MODEL_ID)}",
        ),
        Process(
            f"model-{c.SECOND_MODEL_ID}",
            model,
            env={
                "MODEL_MODEL_ID": c.SECOND_MODEL_ID,
                "MODEL_PORT": str(c.MODEL_BASE_PORT + 1),
                "MODEL_METRICS_PORT": str(c.MODEL_BASE_METRICS_PORT + 1),
            },
            grpc_port=c.MODEL_BASE_PORT + 1,
            info=f"ModelService localhost:{c.MODEL_BASE_PORT + 1}, queue {c.llm_task_queue(c.SECOND_MODEL_ID)}",
        ),
        Process(
            "embed",
            [py, "-m", "embed_svc"],
            grpc_port=c.EMBED_PORT,
            info=f"EmbeddingService localhost:{c.EMBED_PORT}, queue {c.embedding_task_queue(c.EMBEDDING_MODEL_ID)}",
        ),
        Process(
            "envoy",
            [
                str(BIN / "envoy"),
                "-c",
                "envoy/envoy.yaml",
                "--disable-hot-restart",
                "--concurrency",
                "2",
                "--log-level",
                "warn",
            ],
            grpc_port=c.ENVOY_PORT,
            info=f"Envoy gRPC, gRPC-Web, console http://localhost:{c.ENVOY_PORT}, admin 127.0.0.1:{c.ENVOY_ADMIN_PORT}",
        ),
    ]
    return processes


EXPECTED_MODELS = (c.DEFAULT_MODEL_ID, c.SECOND_MODEL_ID, c.EMBEDDING_MODEL_ID)


async def wait_registered(target: str, timeout_s: float = 60) -> None:
    """`up` returns only once every model has registered and the registry sees it SERVING."""
    import grpc
    from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

    deadline = time.monotonic() + timeout_s
    async with grpc.aio.insecure_channel(target) as channel:
        api = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        while time.monotonic() < deadline:
            listing = await api.ListModels(orchestrator_pb2.ListModelsRequest(), timeout=5)
            serving = {m.model_id for m in listing.models if m.health == types_pb2.HEALTH_STATE_SERVING}
            if serving >= set(EXPECTED_MODELS):
                return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"models not all registered and SERVING: expected {EXPECTED_MODELS}")


def pid_file(name: str) -> Path:
    return RUN_DIR / f"{name}.pid"


def running_pid(name: str) -> int | None:
    try:
        pid = int(pid_file(name).read_text())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None


def start(process: Process) -> None:
    if running_pid(process.name):
        return
    log = (LOG_DIR / f"{process.name}.log").open("ab")
    env = {**os.environ, **process.env, "PYTHONUNBUFFERED": "1"}
    # A new session, so the stack outlives this command and `down` can signal each process group.
    child = subprocess.Popen(process.argv, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    pid_file(process.name).write_text(str(child.pid))


def wait_tcp(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def wait_ready(process: Process) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    if process.tcp_port:
        wait_tcp(process.tcp_port, deadline)
    if process.grpc_port:
        asyncio.run(wait_until_serving(f"localhost:{process.grpc_port}", deadline - time.monotonic()))
    if not running_pid(process.name):
        raise RuntimeError(f"{process.name} exited; see {LOG_DIR / (process.name + '.log')}")


def up() -> None:
    for directory in (RUN_DIR, LOG_DIR):
        directory.mkdir(parents=True, exist_ok=True)
    for process in stack():
        start(process)
        try:
            wait_ready(process)
        except Exception as error:
            sys.exit(f"{process.name} did not become ready: {error}\n{tail(process.name)}")
        print(f"  ready  {process.name:32} {process.info}", flush=True)
    asyncio.run(wait_registered(f"localhost:{c.ORCHESTRATOR_PORT}"))
    print(f"  all models registered; logs in {LOG_DIR}; `make down` stops everything", flush=True)


def tail(name: str, lines: int = 20) -> str:
    path = LOG_DIR / f"{name}.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def down() -> None:
    # Reverse order: models drain and deregister while the API and Temporal are still there.
    for process in reversed(stack()):
        pid = running_pid(process.name)
        if pid:
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 40
            while running_pid(process.name) and time.monotonic() < deadline:
                time.sleep(0.1)
            if running_pid(process.name):
                os.killpg(pid, signal.SIGKILL)
            print(f"  stopped {process.name}")
        pid_file(process.name).unlink(missing_ok=True)


def demo() -> None:
    from tools.demo import run_demo

    up()
    # Through Envoy, the front door users reach.
    asyncio.run(run_demo(f"localhost:{c.ENVOY_PORT}"))


def main() -> None:
    commands = {"up": up, "down": down, "demo": demo}
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command not in commands:
        sys.exit("usage: python -m tools.launcher up|down|demo")
    commands[command]()


if __name__ == "__main__":
    main()
