"""Test helpers: services as real child processes (tools/stack.py), a whole orchestrator in-process, bounded polling."""

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from llmorch.internal.v1 import registry_pb2_grpc
from llmorch.v1 import orchestrator_pb2, orchestrator_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc
from temporalio.client import Client, WorkflowHistory
from temporalio.service import RPCError

from llmorch_common.grpc_edge import make_channel
from llmorch_common.payload_codec import EncryptionCodec, parse_keys
from llmorch_common.registration import registration_token
from model_svc.config import ModelSettings
from model_svc.replica import ModelReplica
from orchestrator_svc.app import ApiServer, start_api
from orchestrator_svc.config import OrchestratorSettings
from orchestrator_svc.identity.keys import NO_LIMITS, KeyPolicy, Role
from orchestrator_svc.identity.service import KeyAdmin
from orchestrator_svc.inference.service import workflow_id
from orchestrator_svc.resources import Resources
from tools.bench.history_cost import payloads_of
from tools.stack import Child, embed_spec, free_port, model_env, model_spec, orchestrator_spec

ROOT = Path(__file__).resolve().parent.parent
TEST_TENANT = "test"


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 10.0, interval_s: float = 0.05) -> Any:
    """Poll until `check` returns a truthy value (returned) or the bound passes (the last error is raised)."""
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = await check()
            if value:
                return value
        except (AssertionError, grpc.aio.AioRpcError, RPCError) as error:
            last = error
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s}s") from last


def model_process(
    model_id: str, temporal_address: str, registry_port: int, tmp: Path, engine: str = "fake", **settings: Any
) -> Child:
    """A model replica in its own process, so tests can kill it the way production loses one."""
    port = free_port()
    registry = f"127.0.0.1:{registry_port}"
    env = model_env(model_id, engine, port, temporal_address, registry, heartbeat_interval_s=0.2, **settings)
    return Child(model_spec(f"model-{model_id}-{port}", env), tmp / f"model-{model_id}-{port}.log")


def embed_process(temporal_address: str, registry_port: int, tmp: Path) -> Child:
    """The real embedding service; its GGUF is converted once into data/models and reused."""
    port = free_port()
    return Child(embed_spec(port, temporal_address, f"127.0.0.1:{registry_port}"), tmp / f"embed-{port}.log")


def worker_process(settings: OrchestratorSettings, temporal_address: str, tmp: Path) -> Child:
    """The orchestrator worker in its own process, sharing the test API's stores through their files."""
    env = {
        "ORCH_TASK_QUEUE": settings.task_queue,
        "ORCH_TEMPORAL_ADDRESS": temporal_address,
        "ORCH_REGISTRY_ADDRESS": settings.registry_address,
        "ORCH_WORKER_METRICS_PORT": "0",
        "ORCH_TEMPORAL_METRICS_PORT": "0",
        "ORCH_VECTOR_STORE": settings.vector_store,
        "ORCH_VECTOR_PATH": str(settings.vector_path),
        "ORCH_STAGING_DB": str(settings.staging_db),
        "ORCH_EMBEDDING_ADDRESS": settings.embedding_address,
        "ORCH_EMBEDDING_TASK_QUEUE": settings.embedding_task_queue,
    }
    return Child(orchestrator_spec("worker", env), tmp / "worker.log")


@dataclass
class Orchestrator:
    """API and worker of one test, on a fresh task queue so tests never collide."""

    api: ApiServer
    settings: OrchestratorSettings
    channel: grpc.aio.Channel  # the public port, with a key of tenant TEST_TENANT
    internal_channel: grpc.aio.Channel  # the internal listener, with the registration credential
    resources: Resources
    api_key: str

    @property
    def stub(self) -> orchestrator_pb2_grpc.OrchestratorServiceStub:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)

    @property
    def retrieval(self) -> retrieval_pb2_grpc.RetrievalServiceStub:
        return retrieval_pb2_grpc.RetrievalServiceStub(self.channel)

    @property
    def registry(self) -> registry_pb2_grpc.RegistryServiceStub:
        return registry_pb2_grpc.RegistryServiceStub(self.internal_channel)

    @property
    def address(self) -> str:
        return f"localhost:{self.api.port}"

    @property
    def internal_address(self) -> str:
        return f"localhost:{self.api.internal_port}"

    async def key_for(self, tenant: str, role: Role = Role.TENANT, policy: KeyPolicy = NO_LIMITS) -> str:
        key, _ = await KeyAdmin(self.api.keys).create(tenant, role, policy)
        return key

    async def channel_for(
        self, tenant: str, role: Role = Role.TENANT, policy: KeyPolicy = NO_LIMITS
    ) -> grpc.aio.Channel:
        """A public channel with a fresh key of `tenant` (the caller closes it)."""
        return make_channel(self.address, token=await self.key_for(tenant, role, policy))


def workflow_id_of(request_id: str, tenant: str = TEST_TENANT) -> str:
    """The inference workflow id of a request made with a test key."""
    return workflow_id(tenant, request_id)


def orchestrator_settings(tmp: Path, **overrides: Any) -> OrchestratorSettings:
    values: dict[str, Any] = {
        "port": 0,
        "http_port": 0,
        "internal_port": 0,
        "internal_host": "127.0.0.1",
        "metrics_port": 0,
        "worker_metrics_port": 0,
        "task_queue": f"orchestrator-{uuid.uuid4().hex[:8]}",
        "database_url": f"sqlite:///{tmp / 'registry.db'}",
        "staging_db": tmp / "staging.db",
        "vector_store": "memory",
        "vector_path": tmp / "vectors",
        "heartbeat_timeout_s": 3.0,
        "saturation_timeout_s": 5.0,
    }
    values.update(overrides)
    return OrchestratorSettings(**values)


async def start_orchestrator(client: Client, settings: OrchestratorSettings, with_worker: bool = True) -> Orchestrator:
    # One set of stores for API and worker, as two processes sharing files would have; memory needs it.
    resources = await Resources.open(settings)
    api = await start_api(settings, client, resources, embedded_worker=with_worker)
    settings = settings.model_copy(update={"registry_address": f"localhost:{api.internal_port}"})
    api_key, _ = await KeyAdmin(api.keys).create(TEST_TENANT)
    channel = make_channel(f"localhost:{api.port}", token=api_key)
    internal = make_channel(f"localhost:{api.internal_port}", token=registration_token())
    return Orchestrator(api, settings, channel, internal, resources, api_key)


async def stop_orchestrator(orchestrator: Orchestrator) -> None:
    await orchestrator.channel.close()
    await orchestrator.internal_channel.close()
    await orchestrator.api.stop(grace_s=1)
    await orchestrator.resources.close()


HISTORIES = ROOT / "tests" / "workflow" / "histories"


def record_history(history: WorkflowHistory, name: str) -> None:
    """With LLMORCH_RECORD_HISTORIES=1, keep this run's history for the replay tests (then commit it). Payloads are
    opened first: they are sealed with this session's key, which no later replay holds."""
    if os.environ.get("LLMORCH_RECORD_HISTORIES") == "1":
        codec = EncryptionCodec(parse_keys(os.environ["LLMORCH_PAYLOAD_KEYS"]))
        for event in history.events:
            for payload in payloads_of(event):
                payload.CopyFrom(codec.open(payload))
        HISTORIES.mkdir(parents=True, exist_ok=True)
        (HISTORIES / f"{name}.json").write_text(history.to_json())


def fake_replica(model_id: str, temporal_address: str, registry_address: str, **overrides: Any) -> ModelReplica:
    """An in-process replica: the real ModelService, worker and registration, with the deterministic fake engine."""
    values: dict[str, Any] = {
        "model_id": model_id,
        "engine": "fake",
        "port": 0,
        "metrics_port": 0,
        "temporal_address": temporal_address,
        "registry_address": registry_address,
        "heartbeat_interval_s": 0.2,
        "priority": 0,
        "default_flag": False,
        "fake_token_ms": 1,
    }
    values.update(overrides)
    return ModelReplica(ModelSettings(**values))


PUBLIC_SERVICES = (
    orchestrator_pb2.DESCRIPTOR.services_by_name["OrchestratorService"],
    retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"],
)
WRONG_KEYS = (None, "not-a-key", "llmo_0123456789abcdef_" + "A" * 43)


# Statuses that say nothing precise about what went wrong: no public method may ever answer with them.
IMPRECISE = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})


def public_methods() -> list[MethodDescriptor]:
    return [method for service in PUBLIC_SERVICES for method in service.methods]


def method_path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


async def raw_answer(
    channel: grpc.aio.Channel,
    path: str,
    payload: bytes,
    server_streaming: bool = False,
    metadata: tuple[tuple[str, str], ...] | None = None,
    timeout_s: float = 10.0,
) -> tuple[grpc.StatusCode, str]:
    """Send `payload` as the request bytes of method `path` (a stream read to its end): the status and its details."""
    raw = (lambda data: data), (lambda data: data)
    try:
        if server_streaming:
            async for _ in channel.unary_stream(path, *raw)(payload, timeout=timeout_s, metadata=metadata):
                pass
        else:
            await channel.unary_unary(path, *raw)(payload, timeout=timeout_s, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


async def raw_call(
    channel: grpc.aio.Channel, path: str, payload: bytes, server_streaming: bool = False
) -> grpc.StatusCode:
    """The status of `raw_answer`."""
    code, _ = await raw_answer(channel, path, payload, server_streaming)
    return code


async def health_status(target: str, service: str = "", timeout_s: float = 3.0) -> int:
    """grpc.health.v1's answer for `service` at `target` (health is open: no key)."""
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
        )
    return int(reply.status)


async def assert_every_public_rpc_refuses(target: str) -> None:
    """Every public method, called without a key, with a malformed one and with a well-formed unknown one, is
    UNAUTHENTICATED; health stays open for probes."""
    for token in WRONG_KEYS:
        async with make_channel(target, token=token) as channel:
            for method in public_methods():
                code = await raw_call(channel, method_path(method), b"", method.server_streaming)
                assert code == grpc.StatusCode.UNAUTHENTICATED, (method_path(method), token, code)
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
