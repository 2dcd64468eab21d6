"""The one definition of the local stack: its processes, ports, environment, dev-server flags, readiness, logs and
restart policy. `make up`, the tests and `make bench` all start their processes here, and nowhere else.

Variants are parameters of `StackConfig` (the engine, replicas, an untuned dev server for an A/B, free ports), never
copies. `python -m tools.stack supervise` is the long-lived supervisor that `make up` leaves running: it starts the
stack, restarts a process that dies (with backoff, as Kubernetes would) and stops everything on SIGTERM.
"""

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import grpc
import psycopg
import yaml  # type: ignore[import-untyped]
from google.protobuf.duration_pb2 import Duration
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.workflowservice.v1 import UpdateNamespaceRequest
from temporalio.client import Client

from llmorch_common import constants as c
from llmorch_common.grpc_edge import make_channel, wait_until_serving
from llmorch_common.payload_codec import data_converter, new_key, parse_keys
from orchestrator_svc.identity.keys import Role
from orchestrator_svc.identity.service import KeyAdmin
from orchestrator_svc.identity.store import KeyStore
from tools.envoy_config import write_config
from tools.tls import TlsFiles, issue

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
MODELS_DIR = ROOT / "data" / "models"  # converted weights are shared by every stack, whatever its home
STARTUP_TIMEOUT_S = 180.0
# The peer the bench compares with (LiteLLM's proxy in front of llama-cpp-python's OpenAI server) lives in its own
# virtualenv (`make bench-venv`): LiteLLM's dependency pins must not move the stack's.
BENCH_VENV = ROOT / ".venv-bench"
PEER_MODEL_NAME = "smollm2"  # the name both peer servers serve the weights under
PEER_N_CTX = 2048

# The dev server's history service reads new transfer tasks (every workflow and activity task dispatch) at most
# history.transferProcessorMaxPollRPS times a second, 20 by default: each dispatch waited up to 50 ms, about 30 ms
# on average (docs/benchmarks/overhead.md). At 1000/s a dispatch takes about 2 ms.
TEMPORAL_DEV_SERVER_ARGS = ("--dynamic-config-value", "history.transferProcessorMaxPollRPS=1000")
# Durable flow control (ADR 0020): dispatch by fairness key (the tenant) within each priority, from one partition
# per task queue, where each of the dev server's default 4 partitions would order only its own tasks (approximate
# fairness). A cluster keeps several partitions for throughput and accepts the approximation: see the ADR.
TEMPORAL_QUEUE_ARGS = (
    "--dynamic-config-value",
    "matching.numTaskqueueReadPartitions=1",
    "--dynamic-config-value",
    "matching.numTaskqueueWritePartitions=1",
)
TEMPORAL_FAIRNESS_ARGS = ("--dynamic-config-value", "matching.enableFairness=true")
# The dev server's SQLite file in write-ahead-log mode: a commit appends to the log and syncs it once, where the
# default rollback journal writes a journal file and the database with several syncs. synchronous=full (SQLite's
# default, stated here so no one mistakes it) keeps every commit on disk before it is acknowledged, so a committed
# request survives a power loss as before. The bench's dispatch section measures the rollback journal beside it.
TEMPORAL_SQLITE_ARGS = ("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=full")
# How long Temporal keeps a closed workflow's history (its answer, for GetRequest and reattaching): set on the
# namespace once the dev server is up, rather than left to the server's default (ADR 0015).
TEMPORAL_RETENTION = timedelta(days=3)

# A supervised process that dies is restarted after this backoff, doubled per quick death up to the cap; a process
# that stayed up for RESTART_RESET_AFTER_S starts again from the first step.
RESTART_BACKOFF_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
RESTART_RESET_AFTER_S = 60.0


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before by this process: a stack asks for a dozen at once, and the
    kernel may offer a just-closed port again, which two processes of one stack would then both try to bind."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


# ---------------------------------------------------------------------------------------------------------------
# What a process is


@dataclass(frozen=True)
class ProcessSpec:
    """One process of the stack: how to start it and how to know it is ready."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    grpc_port: int | None = None  # ready once grpc.health.v1 answers SERVING here
    tcp_port: int | None = None  # ready once something accepts connections here (no gRPC health)
    restart: bool = True  # a supervised stack restarts it when it dies
    info: str = ""
    stop_signal: signal.Signals = signal.SIGTERM  # what `stop` sends first (PostgreSQL: SIGINT, its fast shutdown)
    tls_ca: Path | None = None  # grpc_port serves TLS only (Envoy with a certificate): check it trusting this CA


def temporal_settings(config: "StackConfig", db_file: str) -> tuple[str, ...]:
    """The dev server's storage and dynamic-config flags for a stack, its SQLite file at `db_file`: what `make up`
    runs, and what the bench reports beside each figure."""
    wal = TEMPORAL_SQLITE_ARGS if config.temporal_wal else ()
    return (
        *(() if config.temporal_in_memory else ("--db-filename", db_file, *wal)),
        *(TEMPORAL_DEV_SERVER_ARGS if config.temporal_tuned else ()),
        *TEMPORAL_QUEUE_ARGS,
        *(TEMPORAL_FAIRNESS_ARGS if config.temporal_fairness else ()),
        *config.temporal_args,
    )


def temporal_spec(
    home: Path, port: int, ui_port: int, http_port: int, metrics_port: int, config: "StackConfig"
) -> ProcessSpec:
    """The Temporal dev server on a SQLite file in `home`, so a restart keeps every workflow."""
    argv = (
        str(BIN / "temporal"),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--http-port",
        str(http_port),
        "--metrics-port",
        str(metrics_port),
        "--log-level",
        "error",
        *temporal_settings(config, str(home / "temporal.db")),
    )
    return ProcessSpec(
        "temporal", argv, tcp_port=port, info=f"Temporal gRPC 127.0.0.1:{port}, UI http://127.0.0.1:{ui_port}"
    )


def orchestrator_spec(
    role: Literal["api", "worker"], env: Mapping[str, str], grpc_port: int | None = None
) -> ProcessSpec:
    """`python -m orchestrator_svc api|worker` with ORCH_* settings."""
    return ProcessSpec(role, (sys.executable, "-m", "orchestrator_svc", role), env, grpc_port=grpc_port)


def model_env(
    model_id: str,
    engine: str,
    port: int,
    temporal_address: str,
    registry_address: str,
    metrics_port: int = 0,
    **settings: object,
) -> dict[str, str]:
    """MODEL_* settings of one replica; `settings` are further ModelSettings fields by name."""
    return {
        "MODEL_MODEL_ID": model_id,
        "MODEL_ENGINE": engine,
        "MODEL_HOST": "127.0.0.1",
        "MODEL_ADVERTISE_HOST": "127.0.0.1",
        "MODEL_PORT": str(port),
        "MODEL_METRICS_PORT": str(metrics_port),
        "MODEL_TEMPORAL_ADDRESS": temporal_address,
        "MODEL_REGISTRY_ADDRESS": registry_address,
        **{f"MODEL_{key.upper()}": str(value) for key, value in settings.items()},
    }


def model_spec(name: str, env: Mapping[str, str]) -> ProcessSpec:
    port = int(env["MODEL_PORT"])
    queue = c.llm_task_queue(env["MODEL_MODEL_ID"])
    info = f"ModelService 127.0.0.1:{port}, queue {queue}"
    return ProcessSpec(name, (sys.executable, "-m", "model_svc"), env, grpc_port=port, info=info)


def embed_spec(port: int, temporal_address: str, registry_address: str, metrics_port: int = 0) -> ProcessSpec:
    """The real embedding service; its GGUF is converted once into data/models and reused by every stack."""
    env = {
        "EMBED_HOST": "127.0.0.1",
        "EMBED_ADVERTISE_HOST": "127.0.0.1",
        "EMBED_PORT": str(port),
        "EMBED_METRICS_PORT": str(metrics_port),
        "EMBED_TEMPORAL_ADDRESS": temporal_address,
        "EMBED_REGISTRY_ADDRESS": registry_address,
        "EMBED_MODEL_PATH": str(MODELS_DIR / "minilm-l6-v2.gguf"),
    }
    info = f"EmbeddingService 127.0.0.1:{port}, queue {c.embedding_task_queue(c.EMBEDDING_MODEL_ID)}"
    return ProcessSpec("embed", (sys.executable, "-m", "embed_svc"), env, grpc_port=port, info=info)


def envoy_spec(
    config: Path, listen_port: int, admin_port: int, concurrency: int = 2, tls_ca: Path | None = None
) -> ProcessSpec:
    # --disable-hot-restart: several Envoys (tests, the local stack) may run at once without base-id clashes.
    argv = (
        str(BIN / "envoy"),
        "-c",
        str(config),
        "--disable-hot-restart",
        "--concurrency",
        str(concurrency),
        "--log-level",
        "warn",
    )
    scheme = "https" if tls_ca else "http"
    info = f"Envoy gRPC, gRPC-Web, console {scheme}://127.0.0.1:{listen_port}, admin 127.0.0.1:{admin_port}"
    if tls_ca:
        info += f"; clients trust {tls_ca}"
    return ProcessSpec("envoy", argv, grpc_port=listen_port, info=info, tls_ca=tls_ca)


def validate_envoy(config: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate`: checks a config without serving, as `make lint` does for envoy/envoy.yaml."""
    return subprocess.run(
        [str(BIN / "envoy"), "--mode", "validate", "-c", str(config), "--disable-hot-restart", "--log-level", "warn"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def prometheus_spec(config: Path, port: int, data: Path) -> ProcessSpec:
    """Debian's Prometheus (installed by `make test`), scraping a stack with the project's own configuration."""
    argv = (
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    )
    return ProcessSpec("prometheus", argv, tcp_port=port, restart=False)


def redis_spec(port: int, data: Path) -> ProcessSpec:
    """Debian's redis-server (`make test` installs it) for the optional cache: loopback only, nothing persisted (a
    cache that loses its content on restart only costs misses)."""
    argv = ("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
    return ProcessSpec("redis", (*argv, "--dir", str(data)), tcp_port=port, info=f"Redis 127.0.0.1:{port}")


POSTGRES_USER = "llmorch"
POSTGRES_DB = "postgres"


def postgres_bin(program: str) -> Path:
    """Debian's PostgreSQL binaries (tools/install_postgres.sh installs them): the newest major version present."""
    for bindir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True):
        if (bindir / program).exists():
            return bindir / program
    found = shutil.which(program)
    if found is None:
        raise FileNotFoundError(f"PostgreSQL's {program} is not installed: run tools/install_postgres.sh")
    return Path(found)


def _as_postgres_user(argv: tuple[str, ...]) -> tuple[str, ...]:
    """PostgreSQL refuses to run as root, and CI runs as root: run it as the package's `postgres` user then.
    setpriv execs in place (runuser would stay as a parent and SIGKILL the server on SIGTERM), so the process the
    stack signals is PostgreSQL itself."""
    if os.geteuid() != 0:
        return argv
    return ("setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--reset-env", *argv)


@dataclass(frozen=True)
class PostgresCluster:
    """A PostgreSQL cluster in `root` (initdb'd once, kept across restarts) with a generated password."""

    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def password(self) -> str:
        return (self.root / "password").read_text().strip()

    @property
    def url(self) -> str:
        return f"postgresql://{POSTGRES_USER}:{self.password}@127.0.0.1:{self.port}/{POSTGRES_DB}"

    def init(self) -> "PostgresCluster":
        """initdb on first use: a random password (never a default one), scram auth, TCP on loopback only."""
        if (self.data / "PG_VERSION").exists():
            return self
        self.root.mkdir(parents=True, exist_ok=True)
        password_file = self.root / "password"
        password_file.write_text(secrets.token_urlsafe(24) + "\n")
        password_file.chmod(0o600)
        if os.geteuid() == 0:
            # The postgres user must reach its directory; the password stays readable by it and root only.
            for path in (self.root, password_file):
                shutil.chown(path, "postgres", "postgres")
            for parent in self.root.parents:
                if parent.stat().st_mode & 0o001 == 0:
                    parent.chmod(parent.stat().st_mode | 0o001)  # traverse only, nothing listed or read
        argv = (
            str(postgres_bin("initdb")),
            "-D",
            str(self.data),
            "-U",
            POSTGRES_USER,
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        result = subprocess.run(_as_postgres_user(argv), capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}): {result.stderr or result.stdout}")
        return self

    def spec(self, fsync: bool = True) -> ProcessSpec:
        argv = (
            str(postgres_bin("postgres")),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            f"fsync={'on' if fsync else 'off'}",
        )
        info = f"PostgreSQL 127.0.0.1:{self.port}"
        # SIGINT is PostgreSQL's fast shutdown; SIGTERM ("smart") would wait for every client to disconnect.
        return ProcessSpec(
            "postgres", _as_postgres_user(argv), tcp_port=self.port, info=info, stop_signal=signal.SIGINT
        )

    async def wait_accepting(self, timeout_s: float = 60.0) -> None:
        """Its port opens while it still answers "the database system is starting up": wait for a session."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, connect_timeout=5):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


def peer_engine_spec(weights: Path, port: int, n_threads: int, n_ctx: int) -> ProcessSpec:
    """The peer's engine: llama-cpp-python's OpenAI-compatible server on a GGUF file (bench only)."""
    argv = (
        str(BENCH_VENV / "bin" / "python"),
        "-m",
        "llama_cpp.server",
        "--model",
        str(weights),
        "--model_alias",
        PEER_MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        str(n_threads),
        "--n_ctx",
        str(n_ctx),
    )
    return ProcessSpec("peer-engine", argv, tcp_port=port, info=f"llama-cpp-python server http://127.0.0.1:{port}")


def peer_proxy_spec(home: Path, port: int, engine_port: int) -> ProcessSpec:
    """The peer's gateway: LiteLLM's proxy routing to the peer engine, with a generated master key (LiteLLM refuses
    to start without one) in home/peer-key, so both sides of the comparison check a key per request."""
    config = {
        "model_list": [
            {
                "model_name": PEER_MODEL_NAME,
                "litellm_params": {
                    "model": f"openai/{PEER_MODEL_NAME}",
                    "api_base": f"http://127.0.0.1:{engine_port}/v1",
                    "api_key": "unused",
                },
            }
        ],
        "litellm_settings": {"telemetry": False},
    }
    path = home / "litellm.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = (
        str(BENCH_VENV / "bin" / "litellm"),
        "--config",
        str(path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    )
    # The local cost map: the proxy would otherwise fetch it from GitHub at start.
    env = {"LITELLM_MASTER_KEY": peer_key(home), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return ProcessSpec("peer-proxy", argv, env, tcp_port=port, info=f"LiteLLM proxy http://127.0.0.1:{port}")


def peer_key(home: Path) -> str:
    return secret_file(home, "peer-key", lambda: "sk-" + secrets.token_urlsafe(24))


def script_spec(name: str, argv: tuple[str, ...]) -> ProcessSpec:
    """A helper process beside a stack (a test's fake upstream, a profiler): started and stopped like the rest."""
    return ProcessSpec(name, argv, restart=False)


# ---------------------------------------------------------------------------------------------------------------
# A running process


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@dataclass
class Child:
    """One running process of a spec, logging to `log`, in its own session so its whole group can be signalled."""

    spec: ProcessSpec
    log: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    sigterm_sent: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def port(self) -> int | None:
        return self.spec.grpc_port or self.spec.tcp_port

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> "Child":
        output: Any = self.log.open("ab") if self.log else subprocess.DEVNULL
        self.process = subprocess.Popen(
            list(self.spec.argv),
            cwd=ROOT,
            env={**os.environ, **self.spec.env, "PYTHONUNBUFFERED": "1"},
            stdout=output,
            stderr=output,
            start_new_session=True,
        )
        if self.log:
            output.close()  # the child holds its own descriptor
        self.started_at = time.monotonic()
        self.sigterm_sent = False
        return self

    def exit_reason(self) -> str | None:
        if self.process is None or self.process.poll() is None:
            return None
        return f"{self.name} exited ({self.process.returncode}); log {self.log}:\n{tail(self.log) if self.log else ''}"

    async def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        if self.spec.tcp_port:
            await wait_tcp(self.spec.tcp_port, timeout_s, self.exit_reason)
        if self.spec.grpc_port:
            ca = self.spec.tls_ca
            credentials = grpc.ssl_channel_credentials(ca.read_bytes()) if ca else None
            target = f"127.0.0.1:{self.spec.grpc_port}"
            await wait_until_serving(target, timeout_s, exited=self.exit_reason, credentials=credentials)
        reason = self.exit_reason()
        if reason:
            raise RuntimeError(reason)

    async def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> "Child":
        self.spawn()
        await self.wait_ready(timeout_s)
        return self

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            assert self.process is not None
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL, the way production loses a process."""
        if self.process and self.alive():
            self.signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM once (a second one could land after the drain, once Python's handler is gone), wait, then SIGKILL."""
        if self.process is None:
            return None
        if self.alive() and not self.sigterm_sent:
            self.signal(self.spec.stop_signal)
            self.sigterm_sent = True
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        return self.process.returncode

    async def wait_exit(self, timeout_s: float) -> int:
        """Wait for a process that ends by itself (a profiler with a duration)."""
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, timeout_s)

    async def terminate(self, timeout_s: float = 30.0) -> int | None:
        """`stop` without blocking the event loop, which may be serving the API this process talks to."""
        return await asyncio.to_thread(self.stop, timeout_s)

    def cpu_seconds(self) -> float:
        """User+system CPU used so far, children included (from /proc)."""
        try:
            return stat_cpu_seconds(Path(f"/proc/{self.pid}/stat"), children=True)
        except (OSError, TypeError):
            return 0.0


def stat_cpu_seconds(stat: Path, children: bool) -> float:
    """User+system CPU seconds from a process's or a thread's /proc stat file, with its reaped children's if asked."""
    # Fields 14-17 of stat (utime, stime, cutime, cstime), counted after the ")" that ends the name.
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11 : 15 if children else 13]) / os.sysconf("SC_CLK_TCK")


async def wait_tcp(port: int, timeout_s: float, exited: Any = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reason = exited() if exited else None
        if reason:
            raise RuntimeError(reason)
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port} after {timeout_s}s")


# ---------------------------------------------------------------------------------------------------------------
# The stack


@dataclass(frozen=True)
class ModelGroup:
    """The replicas of one model in the stack."""

    model_id: str
    engine: Literal["llama", "fake"] = "llama"
    replicas: int = 1
    max_concurrency: int = 1
    settings: tuple[tuple[str, str], ...] = ()  # further ModelSettings fields, e.g. (("fake_token_ms", "2"),)


@dataclass(frozen=True)
class StackConfig:
    """What differs between stacks. The defaults are what `make up` runs."""

    models: tuple[ModelGroup, ...] = (ModelGroup(c.DEFAULT_MODEL_ID), ModelGroup(c.SECOND_MODEL_ID))
    embed: bool = True
    envoy: bool = True
    worker: bool = True
    # Several API replicas behind Envoy and several orchestrator workers share the registry on PostgreSQL (a
    # cluster the stack initialises in home/postgres); one API replica keeps the embedded SQLite registry.
    api_replicas: int = 1
    worker_replicas: int = 1
    postgres: bool = False
    redis: bool = False  # Redis for the cache of deterministic completions and embeddings (ORCH_REDIS_URL)
    temporal_tuned: bool = True  # False measures the dev server's defaults (an A/B in the bench)
    temporal_args: tuple[str, ...] = ()  # further `start-dev` flags, e.g. ("--dynamic-config-value", "K=V")
    temporal_in_memory: bool = False  # the dev server's in-memory store instead of the SQLite file (an A/B)
    temporal_wal: bool = True  # False: SQLite's default rollback journal (an A/B)
    temporal_fairness: bool = True  # False: each queue in arrival order within a priority (the fairness control)
    orchestrator_env: tuple[tuple[str, str], ...] = ()  # further ORCH_* settings for the API and the worker
    # Envoy's public listener serves TLS only, with this certificate; its CA is what the stack's clients trust.
    tls: TlsFiles | None = None
    fixed_ports: bool = False  # the documented ports (make up) instead of free ones
    home: Path | None = None  # data, logs and run state; None is a fresh temporary directory, removed on stop
    supervised: bool = False  # restart a process that dies (make up); tests and the bench kill on purpose
    stop_grace_s: float = 40.0  # per process, on stop: models drain in-flight generations first
    # The bench's peer (LiteLLM -> llama-cpp-python) on these weights beside the stack, started and stopped with it.
    peer_weights: Path | None = None
    peer_n_threads: int = 2
    label: str = "default"
    # Every process exports its spans here (OTEL_EXPORTER_OTLP_ENDPOINT, http://host:port) and Envoy turns its
    # tracer on; empty: no tracing. `otel_env` adds further OTEL_* variables, e.g. a short batch delay in tests.
    otlp_endpoint: str = ""
    otel_env: tuple[tuple[str, str], ...] = ()
    # json for log collectors and tests; make up writes readable text (LLMORCH_LOG_FORMAT).
    log_format: Literal["json", "text"] = "json"

    def __post_init__(self) -> None:
        if self.api_replicas > 1 and not self.postgres:
            raise ValueError("several API replicas share the registry: set postgres=True")


def replicated(config: StackConfig, replicas: int) -> StackConfig:
    """The same stack with `replicas` API replicas and workers on a shared PostgreSQL (`make up REPLICAS=2`)."""
    return replace(config, api_replicas=replicas, worker_replicas=replicas, postgres=replicas > 1 or config.postgres)


def fake_stack(
    replicas: int = 1, max_concurrency: int = 32, first_token_ms: float = 20.0, token_ms: float = 2.0, **config: Any
) -> StackConfig:
    """The stack with the deterministic fake engine behind the real ModelService, for timing: one model, no
    embedding service (nothing to embed). Everything else is the stack `make up` runs."""
    settings = (
        ("fake_first_token_ms", str(first_token_ms)),
        ("fake_token_ms", str(token_ms)),
        ("drain_timeout_s", "2"),
    )
    model = ModelGroup(c.DEFAULT_MODEL_ID, "fake", replicas, max_concurrency, settings)
    return StackConfig(models=(model,), embed=False, **config)


@dataclass(frozen=True)
class Ports:
    temporal: int
    temporal_ui: int
    temporal_http: int
    temporal_metrics: int
    api: int
    api_http: int
    api_internal: int  # RegistryService, for the platform's own processes
    api_metrics: int
    worker_metrics: int
    worker_sdk_metrics: int
    api_sdk_metrics: int
    embed: int
    embed_metrics: int
    envoy: int
    envoy_admin: int
    models: tuple[int, ...]
    model_metrics: tuple[int, ...]
    postgres: int = 0  # always a free port: a local PostgreSQL must not meet a system one on 5432
    peer_engine: int = 0  # the bench's peer (free ports only)
    peer_proxy: int = 0
    redis: int = 0  # always a free port, like PostgreSQL's
    # API replicas and workers after the first (whose ports are above), each with its own ports.
    more_apis: tuple[int, ...] = ()
    more_api_http: tuple[int, ...] = ()
    more_api_internals: tuple[int, ...] = ()
    more_api_metrics: tuple[int, ...] = ()
    more_api_sdk_metrics: tuple[int, ...] = ()
    more_worker_metrics: tuple[int, ...] = ()
    more_worker_sdk_metrics: tuple[int, ...] = ()

    def with_replicas(self, apis: int, workers: int, fixed: bool) -> "Ports":
        """Ports for the API replicas and workers after the first; fixed ports put API replica i on 50051+i."""
        extra_apis, extra_workers = range(1, apis), range(1, workers)
        return replace(
            self,
            postgres=free_port(),
            redis=free_port(),
            more_apis=tuple((self.api + i) if fixed else free_port() for i in extra_apis),
            more_api_http=tuple(free_port() for _ in extra_apis),  # only Envoy reaches them
            more_api_internals=tuple((self.api_internal - i) if fixed else free_port() for i in extra_apis),
            more_api_metrics=tuple(free_port() for _ in extra_apis),
            more_api_sdk_metrics=tuple(free_port() for _ in extra_apis),
            more_worker_metrics=tuple(free_port() for _ in extra_workers),
            more_worker_sdk_metrics=tuple(free_port() for _ in extra_workers),
        )

    @property
    def apis(self) -> tuple[int, ...]:
        return (self.api, *self.more_apis)

    @property
    def api_https(self) -> tuple[int, ...]:
        return (self.api_http, *self.more_api_http)

    @property
    def api_internals(self) -> tuple[int, ...]:
        return (self.api_internal, *self.more_api_internals)

    @classmethod
    def fixed(cls, replicas: int) -> "Ports":
        return cls(
            temporal=c.TEMPORAL_PORT,
            temporal_ui=c.TEMPORAL_UI_PORT,
            temporal_http=c.TEMPORAL_HTTP_PORT,
            temporal_metrics=c.TEMPORAL_METRICS_PORT,
            api=c.ORCHESTRATOR_PORT,
            api_http=c.ORCHESTRATOR_HTTP_PORT,
            api_internal=c.ORCHESTRATOR_INTERNAL_PORT,
            api_metrics=c.ORCHESTRATOR_METRICS_PORT,
            worker_metrics=c.ORCHESTRATOR_WORKER_METRICS_PORT,
            worker_sdk_metrics=c.ORCHESTRATOR_WORKER_SDK_METRICS_PORT,
            api_sdk_metrics=c.ORCHESTRATOR_API_SDK_METRICS_PORT,
            embed=c.EMBED_PORT,
            embed_metrics=c.EMBED_METRICS_PORT,
            envoy=c.ENVOY_PORT,
            envoy_admin=c.ENVOY_ADMIN_PORT,
            models=tuple(c.MODEL_BASE_PORT + i for i in range(replicas)),
            model_metrics=tuple(c.MODEL_BASE_METRICS_PORT + i for i in range(replicas)),
        )

    @classmethod
    def free(cls, replicas: int) -> "Ports":
        singles: dict[str, Any] = {
            name: free_port()
            for name, spec in cls.__dataclass_fields__.items()
            if spec.type in (int, "int") and name not in ("postgres", "redis")
        }
        models = tuple(free_port() for _ in range(replicas))
        return cls(**singles, models=models, model_metrics=tuple(free_port() for _ in range(replicas)))


def payload_keys(home: Path) -> str:
    """The stack's payload keys (LLMORCH_PAYLOAD_KEYS), kept beside its Temporal database, so a restarted stack
    still opens the histories it sealed."""
    return secret_file(home, "payload-keys", lambda: new_key("k1"))


def postgres_cluster(home: Path, ports: Ports) -> PostgresCluster:
    return PostgresCluster(home / "postgres", ports.postgres)


def secret_file(home: Path, name: str, make: Callable[[], str]) -> str:
    """A secret made once per home (mode 0600) and kept there, so a restarted stack still uses it."""
    path = home / name
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(make())
    return path.read_text().strip()


DEV_TENANT = "dev"
DEV_KEY_FILE = "api-key"


def registration_token(home: Path) -> str:
    """The control plane's credential (LLMORCH_REGISTRATION_TOKEN) of this stack."""
    return secret_file(home, "registration-token", lambda: secrets.token_urlsafe(32))


def registry_target(config: StackConfig, ports: Ports) -> str:
    """Where replicas and workers reach RegistryService on the APIs' internal listeners: with several API replicas,
    any of them (gRPC's pick_first moves on to the next address when one dies)."""
    if config.api_replicas == 1:
        return f"127.0.0.1:{ports.api_internal}"
    return "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports.api_internals[: config.api_replicas])


def stack_database_url(config: StackConfig, home: Path, ports: Ports) -> str:
    """The registry's database (keys included); a PostgreSQL one once `plan` has initialised its cluster."""
    return postgres_cluster(home, ports).url if config.postgres else f"sqlite:///{home / 'registry.db'}"


async def create_key(database_url: str, tenant: str, role: Role = Role.TENANT) -> str:
    """A new API key, as `llmorch-admin keys create` makes one."""
    store = await KeyStore.open(database_url)
    try:
        key, _ = await KeyAdmin(store).create(tenant, role)
        return key
    finally:
        await store.close()


def observability_env(config: StackConfig) -> dict[str, str]:
    """How every process of the platform logs and traces (llmorch_common/logs.py, llmorch_common/tracing.py)."""
    env: dict[str, str] = {"LLMORCH_LOG_FORMAT": config.log_format}
    if config.otlp_endpoint:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = config.otlp_endpoint
    return {**env, **dict(config.otel_env)}


def plan(config: StackConfig, home: Path, ports: Ports) -> list[ProcessSpec]:
    """Every process of the stack, in start order: each one's dependencies come before it. A PostgreSQL stack
    initialises its cluster here, once (its password is part of the API's environment)."""
    # Every process that reads workflow payloads or speaks to the registry holds these.
    sealed = {"LLMORCH_PAYLOAD_KEYS": payload_keys(home), "LLMORCH_REGISTRATION_TOKEN": registration_token(home)}
    observed = observability_env(config)  # every process of the platform: its log format and trace exporter
    temporal_address = f"127.0.0.1:{ports.temporal}"
    registry = registry_target(config, ports)
    specs: list[ProcessSpec] = []
    if config.postgres:
        specs.append(postgres_cluster(home, ports).init().spec())
    database_url = stack_database_url(config, home, ports)
    redis_env = {}
    if config.redis:
        (home / "redis").mkdir(parents=True, exist_ok=True)
        specs.append(redis_spec(ports.redis, home / "redis"))
        redis_env["ORCH_REDIS_URL"] = f"redis://127.0.0.1:{ports.redis}/0"
    orchestrator_env = {
        "ORCH_HOST": "127.0.0.1",
        "ORCH_INTERNAL_HOST": "127.0.0.1",
        "ORCH_PORT": str(ports.api),
        "ORCH_HTTP_PORT": str(ports.api_http),
        "ORCH_METRICS_PORT": str(ports.api_metrics),
        "ORCH_WORKER_METRICS_PORT": str(ports.worker_metrics),
        "ORCH_TEMPORAL_METRICS_PORT": str(ports.worker_sdk_metrics),
        "ORCH_TEMPORAL_ADDRESS": temporal_address,
        "ORCH_DATABASE_URL": database_url,
        "ORCH_REGISTRY_ADDRESS": registry,
        "ORCH_VECTOR_STORE": "lancedb",
        "ORCH_VECTOR_PATH": str(home / "vectors"),
        "ORCH_STAGING_DB": str(home / "ingestion.db"),
        "ORCH_EMBEDDING_ADDRESS": f"127.0.0.1:{ports.embed}",
        **sealed,
        **redis_env,
        **observed,
        **dict(config.orchestrator_env),
    }

    def own_data(name: str) -> dict[str, str]:
        """On PostgreSQL nothing is shared through files (ADR 0012): each replica gets its own data directory, as
        each pod has its own disk, and vectors and staged documents live in the database."""
        if not config.postgres:
            return {}
        data = home / "replicas" / name
        return {
            "ORCH_VECTOR_STORE": "postgres",
            "ORCH_VECTOR_PATH": str(data / "vectors"),
            "ORCH_STAGING_DB": str(data / "ingestion.db"),
        }

    specs.append(
        temporal_spec(home, ports.temporal, ports.temporal_ui, ports.temporal_http, ports.temporal_metrics, config)
    )
    api_ports = list(
        zip(
            ports.apis,
            ports.api_internals,
            ports.api_https,
            (ports.api_metrics, *ports.more_api_metrics),
            (ports.api_sdk_metrics, *ports.more_api_sdk_metrics),
            strict=True,
        )
    )
    for index, (port, internal, http_port, metrics, sdk_metrics) in enumerate(api_ports[: config.api_replicas]):
        name = "api" if index == 0 else f"api-{index}"
        env = {**orchestrator_env, **own_data(name), "ORCH_PORT": str(port), "ORCH_METRICS_PORT": str(metrics)}
        env["ORCH_INTERNAL_PORT"] = str(internal)
        env["ORCH_HTTP_PORT"] = str(http_port)
        env["ORCH_API_TEMPORAL_METRICS_PORT"] = str(sdk_metrics)
        api = orchestrator_spec("api", env, grpc_port=port)
        specs.append(replace(api, name=name, info=f"API grpc 127.0.0.1:{port}, metrics :{metrics}"))
    if config.worker:
        worker_ports = list(
            zip(
                (ports.worker_metrics, *ports.more_worker_metrics),
                (ports.worker_sdk_metrics, *ports.more_worker_sdk_metrics),
                strict=True,
            )
        )
        for index, (metrics, sdk_metrics) in enumerate(worker_ports[: config.worker_replicas]):
            name = "worker" if index == 0 else f"worker-{index}"
            env = {**orchestrator_env, **own_data(name), "ORCH_WORKER_METRICS_PORT": str(metrics)}
            env["ORCH_TEMPORAL_METRICS_PORT"] = str(sdk_metrics)
            worker = orchestrator_spec("worker", env)
            specs.append(replace(worker, name=name, info=f"worker on {c.ORCHESTRATOR_TASK_QUEUE}, metrics :{metrics}"))
    slot = 0
    for group in config.models:
        for replica in range(group.replicas):
            env = model_env(
                group.model_id,
                group.engine,
                ports.models[slot],
                temporal_address,
                registry,
                ports.model_metrics[slot],
                max_concurrency=group.max_concurrency,
                **dict(group.settings),
            )
            specs.append(model_spec(f"model-{group.model_id}-{replica}", {**env, **sealed, **observed}))
            slot += 1
    if config.embed:
        embed = embed_spec(ports.embed, temporal_address, registry, ports.embed_metrics)
        specs.append(replace(embed, env={**embed.env, **sealed, **observed}))
    if config.envoy:
        upstreams = ports.apis[: config.api_replicas]
        http_upstreams = ports.api_https[: config.api_replicas]
        tls = config.tls
        envoy_config = write_config(
            home / "envoy.yaml",
            upstreams[0],
            ports.envoy,
            ports.envoy_admin,
            more_orchestrator_ports=upstreams[1:],
            orchestrator_http_port=http_upstreams[0],
            more_http_ports=http_upstreams[1:],
            tls=(tls.cert, tls.key) if tls else None,
            otlp_endpoint=config.otlp_endpoint,
        )
        specs.append(envoy_spec(envoy_config, ports.envoy, ports.envoy_admin, tls_ca=tls.ca if tls else None))
    if config.peer_weights:
        specs.append(peer_engine_spec(config.peer_weights, ports.peer_engine, config.peer_n_threads, PEER_N_CTX))
        specs.append(peer_proxy_spec(home, ports.peer_proxy, ports.peer_engine))
    return specs


async def set_retention(
    temporal_address: str, namespace: str = c.TEMPORAL_NAMESPACE, retention: timedelta = TEMPORAL_RETENTION
) -> None:
    """Set how long the namespace keeps closed histories; UpdateNamespace changes only the config fields it is given.

    The port accepts before the frontend is healthy ("Frontend is not healthy yet"): the connection is retried."""
    deadline = time.monotonic() + 60
    while True:
        try:
            client = await Client.connect(temporal_address, namespace=namespace)
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    ttl = Duration()
    ttl.FromTimedelta(retention)
    config = NamespaceConfig(workflow_execution_retention_ttl=ttl)
    await client.workflow_service.update_namespace(UpdateNamespaceRequest(namespace=namespace, config=config))


@dataclass
class Stack:
    """The processes of one `StackConfig`, started in order and stopped in reverse."""

    config: StackConfig = field(default_factory=StackConfig)
    children: list[Child] = field(default_factory=list)
    home: Path = field(init=False)
    ports: Ports = field(init=False)
    logs: Path = field(init=False)
    api_key: str = field(init=False, default="")  # the dev key, once started

    def __post_init__(self) -> None:
        self.home = self.config.home or Path(tempfile.mkdtemp(prefix="llmorch-stack-"))
        replicas = sum(group.replicas for group in self.config.models)
        ports = Ports.fixed(replicas) if self.config.fixed_ports else Ports.free(replicas)
        config = self.config
        self.ports = ports.with_replicas(config.api_replicas, config.worker_replicas, config.fixed_ports)
        self.logs = self.home / "logs"

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.ports.temporal}"

    @property
    def api_target(self) -> str:
        return f"127.0.0.1:{self.ports.api}"

    @property
    def api_targets(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports.apis[: self.config.api_replicas]]

    @property
    def envoy_target(self) -> str:
        return f"127.0.0.1:{self.ports.envoy}"

    @property
    def envoy_url(self) -> str:
        """The console's address: https when Envoy has a certificate."""
        return f"{'https' if self.config.tls else 'http'}://{self.envoy_target}"

    @property
    def openai_base_url(self) -> str:
        """The OpenAI-compatible API through Envoy, as an OpenAI SDK's base_url."""
        return f"{self.envoy_url}/v1"

    @property
    def model_ports(self) -> tuple[int, ...]:
        return self.ports.models

    @property
    def peer_urls(self) -> dict[str, str]:
        """The peer's OpenAI-compatible bases: through LiteLLM (`proxy`) and its engine called directly (`engine`)."""
        return {
            "proxy": f"http://127.0.0.1:{self.ports.peer_proxy}/v1",
            "engine": f"http://127.0.0.1:{self.ports.peer_engine}/v1",
        }

    @property
    def peer_key(self) -> str:
        return peer_key(self.home)

    async def temporal_client(self) -> Client:
        """A client of this stack's Temporal that opens its sealed payloads (the stack's own key)."""
        keys = parse_keys(payload_keys(self.home))
        return await Client.connect(self.temporal_address, data_converter=data_converter(keys))

    def child(self, name: str) -> Child:
        return next(child for child in self.children if child.name == name)

    def launch(self, spec: ProcessSpec) -> Child:
        self.logs.mkdir(parents=True, exist_ok=True)
        child = Child(spec, self.logs / f"{spec.name}.log").spawn()
        self.children.append(child)
        return child

    async def start_temporal(self) -> Child:
        """Only the dev server, as the stack runs it: for tests and measurements that bring their own workers."""
        self.home.mkdir(parents=True, exist_ok=True)
        specs = plan(replace(self.config, envoy=False), self.home, self.ports)
        child = self.launch(next(spec for spec in specs if spec.name == "temporal"))
        await child.wait_ready()
        await set_retention(self.temporal_address)
        return child

    async def start(self, progress: Any = None) -> "Stack":
        """Start every process and wait for each to be ready, then for every model to register."""
        self.home.mkdir(parents=True, exist_ok=True)
        for spec in plan(self.config, self.home, self.ports):
            child = self.launch(spec)
            await child.wait_ready()
            if spec.name == "temporal":
                await set_retention(self.temporal_address)
            if spec.name == "postgres":
                await postgres_cluster(self.home, self.ports).wait_accepting()
            if progress:
                progress(child)
        self.api_key = await self.dev_key()
        await self.wait_registered()
        return self

    @property
    def database_url(self) -> str:
        return stack_database_url(self.config, self.home, self.ports)

    async def dev_key(self) -> str:
        """The stack's development key (tenant DEV_TENANT), made on its first start and kept in its home (0600)."""
        path = self.home / DEV_KEY_FILE
        if not path.exists():
            key = await create_key(self.database_url, DEV_TENANT)
            path.touch(mode=0o600)
            path.write_text(key)
        return path.read_text().strip()

    def channel(self, target: str | None = None, api_key: str | None = None) -> "grpc.aio.Channel":
        """A public channel (Envoy's, unless `target` names another) whose calls carry the dev key or `api_key`;
        to a TLS Envoy it speaks TLS, trusting the stack's CA."""
        target = target or self.envoy_target
        tls = self.config.tls if target == self.envoy_target else None
        credentials = grpc.ssl_channel_credentials(tls.ca.read_bytes()) if tls else None
        return make_channel(target, token=api_key or self.api_key, credentials=credentials)

    def expected_capacity(self) -> dict[str, int]:
        capacity = {group.model_id: 0 for group in self.config.models}
        for group in self.config.models:
            capacity[group.model_id] += group.replicas * group.max_concurrency
        return capacity

    async def wait_registered(self, timeout_s: float = 60.0) -> None:
        """Every replica registered and SERVING, so the router sees the whole capacity."""
        from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, types_pb2

        expected = self.expected_capacity()
        if self.config.embed:
            expected[c.EMBEDDING_MODEL_ID] = 1
        deadline = time.monotonic() + timeout_s
        seen: dict[str, int] = {}
        async with self.channel(self.api_target) as channel:
            api = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            while time.monotonic() < deadline:
                listing = await api.ListModels(orchestrator_pb2.ListModelsRequest(), timeout=5)
                seen = {
                    m.model_id: m.capacity or 1 for m in listing.models if m.health == types_pb2.HEALTH_STATE_SERVING
                }
                if all(seen.get(model, 0) >= capacity for model, capacity in expected.items()):
                    return
                await asyncio.sleep(0.2)
        raise TimeoutError(f"models not all registered and SERVING: expected {expected}, saw {seen}")

    def write_prometheus_config(self, path: Path, scrape_interval: str = "1s") -> Path:
        """deploy/prometheus/prometheus.yml with each job pointed at this stack's ports (jobs it lacks are left out)."""
        ports = self.ports
        by_job = {
            "orchestrator-api": [ports.api_metrics],
            "orchestrator-api-sdk": [ports.api_sdk_metrics],
            "orchestrator-worker": [ports.worker_metrics] if self.config.worker else [],
            "orchestrator-worker-sdk": [ports.worker_sdk_metrics] if self.config.worker else [],
            "model": list(ports.model_metrics),
            "embed": [ports.embed_metrics] if self.config.embed else [],
            "envoy": [ports.envoy_admin] if self.config.envoy else [],
            "temporal": [ports.temporal_metrics],
        }
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        config["global"]["scrape_interval"] = scrape_interval
        config["rule_files"] = [str(PROMETHEUS_CONFIG.parent / name) for name in config.get("rule_files", [])]
        jobs = []
        for job in config["scrape_configs"]:
            targets = by_job.pop(job["job_name"])
            if targets:
                jobs.append({**job, "static_configs": [{"targets": [f"127.0.0.1:{port}" for port in targets]}]})
        assert not by_job, f"jobs missing from {PROMETHEUS_CONFIG}: {sorted(by_job)}"
        config["scrape_configs"] = jobs
        path.write_text(yaml.safe_dump(config))
        return path

    def cpu_seconds(self) -> dict[str, float]:
        """CPU each kind of process has used so far, to see which process a request's cost lands in."""
        usage: dict[str, float] = {}
        for child in self.children:
            name = "model" if child.name.startswith("model-") else child.name
            usage[name] = usage.get(name, 0.0) + child.cpu_seconds()
        return usage

    async def supervise(self, stop: asyncio.Event, on_restart: Any = None) -> None:
        """Restart any process that dies until `stop` is set; the backoff doubles while it keeps dying quickly."""
        backoff = {child.name: RESTART_BACKOFF_S for child in self.children}
        due: dict[str, float] = {}
        while not stop.is_set():
            now = time.monotonic()
            for child in self.children:
                if child.alive() or not child.spec.restart:
                    continue
                if child.name not in due:
                    if now - child.started_at > RESTART_RESET_AFTER_S:
                        backoff[child.name] = RESTART_BACKOFF_S
                    due[child.name] = now + backoff[child.name]
                    backoff[child.name] = min(backoff[child.name] * 2, RESTART_BACKOFF_MAX_S)
                elif now >= due[child.name]:
                    del due[child.name]
                    code = child.process.returncode if child.process else None
                    child.spawn()
                    child.restarts += 1
                    if on_restart:
                        on_restart(child, code)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.2)

    async def stop(self) -> None:
        # Reverse order, as `make down`: models drain while the API and Temporal are still there.
        for child in reversed(self.children):
            await child.terminate(self.config.stop_grace_s)
        self.children.clear()
        if self.config.home is None:
            shutil.rmtree(self.home, ignore_errors=True)

    async def stop_keep_logs(self) -> None:
        logs = {child.name: tail(child.log) for child in self.children if child.log}
        await self.stop()
        for name, text in logs.items():
            if text:
                print(f"--- {name} log tail ---\n{text}", file=sys.stderr)

    async def __aenter__(self) -> "Stack":
        try:
            return await self.start()
        except BaseException:
            await self.stop_keep_logs()
            raise

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await (self.stop_keep_logs() if error else self.stop())


# ---------------------------------------------------------------------------------------------------------------
# The supervised stack that `make up` leaves running


class LocalStackSettings(BaseSettings):
    """How `make up` shapes its stack; the defaults are the documented local stack."""

    model_config = SettingsConfigDict(env_prefix="LLMORCH_STACK_")

    home: Path = Field(ROOT / "data", description="Data, logs (home/logs) and run state (home/run)")
    free_ports: bool = Field(False, description="Pick free ports instead of the documented ones (tests)")
    engine: Literal["llama", "fake"] = Field("llama", description="fake serves the deterministic timing engine")
    replicas: int = Field(
        1,
        ge=1,
        le=9,
        description="API replicas and orchestrator workers (make up REPLICAS=2); more than one puts "
        "the registry on a PostgreSQL cluster in home/postgres, with a generated password",
    )
    tls: bool = Field(
        False,
        description="Envoy serves TLS only, with home/tls/cert.pem and key.pem; a local CA (home/tls/ca.pem, for "
        "clients to trust) issues them on first use unless all three files are already there",
    )
    redis: bool = Field(False, description="Start Redis for the completion and embedding cache (make up REDIS=1)")

    otlp_endpoint: str = Field(
        "",
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="The standard OTel variable: `OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 make up` sends "
        "every process's spans, Envoy's included, to that OTLP gRPC collector",
    )

    def config(self) -> StackConfig:
        models = tuple(ModelGroup(model_id, self.engine) for model_id in (c.DEFAULT_MODEL_ID, c.SECOND_MODEL_ID))
        home = self.home.resolve()
        tls = issue(home / "tls") if self.tls else None
        config = StackConfig(
            models=models,
            fixed_ports=not self.free_ports,
            home=home,
            supervised=True,
            label="make up",
            tls=tls,
            redis=self.redis,
            otlp_endpoint=self.otlp_endpoint,
            log_format="text",
        )
        return replicated(config, self.replicas)

    @property
    def state_file(self) -> Path:
        return self.home / "run" / "stack.json"

    def dev_key(self) -> str:
        """The running stack's development key (Stack.dev_key made it)."""
        return (self.home / DEV_KEY_FILE).read_text().strip()

    def envoy_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS to the running stack's Envoy, trusting its local CA (home/tls/ca.pem), when `tls` is on."""
        return (
            grpc.ssl_channel_credentials(TlsFiles.in_directory(self.home / "tls").ca.read_bytes()) if self.tls else None
        )


def write_state(path: Path, stack: Stack | None, state: str, error: str = "") -> None:
    """What `make up`, `make down` and the tests read: the supervisor's pid, the ports and each process."""
    processes = {
        child.name: {"pid": child.pid, "restarts": child.restarts, "info": child.spec.info, "log": str(child.log)}
        for child in (stack.children if stack else [])
    }
    document = {
        "supervisor_pid": os.getpid(),
        "state": state,
        "error": error,
        "ports": asdict(stack.ports) if stack else {},
        "processes": processes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=1))
    temporary.replace(path)  # atomic, so a reader never sees half a file


async def supervise_local(settings: LocalStackSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stack = Stack(settings.config())
    path = settings.state_file

    def progress(child: Child) -> None:
        print(f"  ready  {child.name:32} {child.spec.info}", flush=True)
        write_state(path, stack, "starting")

    def restarted(child: Child, code: int | None) -> None:
        print(f"  restarted {child.name} (exit {code}), restart #{child.restarts}", flush=True)
        write_state(path, stack, "ready")

    write_state(path, stack, "starting")
    try:
        await stack.start(progress)
    except Exception as error:
        write_state(path, stack, "failed", f"{type(error).__name__}: {error}")
        await stack.stop()
        return
    write_state(path, stack, "ready")
    await stack.supervise(stop, restarted)
    write_state(path, stack, "stopping")
    await stack.stop()
    write_state(path, None, "stopped")


def launch_supervisor(settings: LocalStackSettings) -> Child:
    """Start `python -m tools.stack supervise` in its own session, so the stack outlives `make up`."""
    log_dir = settings.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    spec = ProcessSpec("supervisor", (sys.executable, "-m", "tools.stack", "supervise"))
    return Child(spec, log_dir / "supervisor.log").spawn()


def main() -> None:
    if sys.argv[1:] != ["supervise"]:
        sys.exit("usage: python -m tools.stack supervise   (make up runs it)")
    asyncio.run(supervise_local(LocalStackSettings()))


if __name__ == "__main__":
    main()
