"""The replica lifecycle's order, seen from outside: health and the registry's calls at each step of a fake model."""

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import eventually, fake_replica
from llmorch.internal.v1 import metadata_pb2, model_pb2, model_pb2_grpc, registry_pb2, registry_pb2_grpc
from llmorch.v1 import types_pb2

from llmorch_common.grpc_edge import create_server, set_serving
from model_svc.server import SERVICE_NAME

pytestmark = pytest.mark.slow  # needs the Temporal dev server for the worker step
Status = int  # a grpc.health.v1 ServingStatus value


async def replica_health(endpoint: str) -> Status:
    async with grpc.aio.insecure_channel(endpoint) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=2
        )
        return int(reply.status)


class RecordingRegistry(registry_pb2_grpc.RegistryServiceServicer):
    """Records each call with the replica's own health at that moment, so the test sees the order of both."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Status]] = []
        self.registered: list[metadata_pb2.ModelMetadata] = []

    async def Register(
        self, request: registry_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.RegisterResponse:
        self.registered.append(request.metadata)
        self.calls.append(("register", await replica_health(request.metadata.endpoint)))
        return registry_pb2.RegisterResponse()

    async def Heartbeat(
        self, request: registry_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.HeartbeatResponse:
        self.calls.append(("heartbeat", await replica_health(request.endpoint)))
        return registry_pb2.HeartbeatResponse()

    async def Deregister(
        self, request: registry_pb2.DeregisterRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.DeregisterResponse:
        self.calls.append(("deregister", await replica_health(request.endpoint)))
        return registry_pb2.DeregisterResponse()

    async def ListModels(
        self, request: registry_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ListModelsResponse:
        return registry_pb2.ListModelsResponse()  # replicas never list

    async def GetModel(
        self, request: registry_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.GetModelResponse:
        return registry_pb2.GetModelResponse()  # replicas never look up

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls]


@pytest.fixture
async def registry() -> AsyncIterator[tuple[RecordingRegistry, str]]:
    recording = RecordingRegistry()

    def register(server: grpc.aio.Server) -> list[str]:
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(recording, server)
        return [registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name]

    server, port, health = await create_server(register, 0, "127.0.0.1")
    await server.start()
    await set_serving(health, [], True)
    yield recording, f"127.0.0.1:{port}"
    await server.stop(0)


async def test_not_serving_until_loaded_then_registered_and_drained_in_order(
    registry: tuple[RecordingRegistry, str], temporal_address: str
) -> None:
    recording, registry_address = registry
    replica = fake_replica("lifecycle-fake", temporal_address, registry_address, heartbeat_interval_s=0.1)
    await replica.serve()
    endpoint = f"localhost:{replica.port}"
    assert await replica_health(endpoint) == health_pb2.HealthCheckResponse.NOT_SERVING
    async with grpc.aio.insecure_channel(endpoint) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as loading:
            await model_pb2_grpc.ModelServiceStub(channel).Generate(model_pb2.GenerateRequest(prompt="hi"))
    assert loading.value.code() == grpc.StatusCode.UNAVAILABLE

    await replica.load()
    assert await replica_health(endpoint) == health_pb2.HealthCheckResponse.SERVING
    assert recording.calls == [], "nothing registers before the worker polls"

    await replica.poll()
    await eventually(lambda: _heartbeats(recording, 2))
    (metadata,) = recording.registered
    assert (metadata.endpoint, metadata.task_queue, metadata.model_type) == (
        endpoint,
        "llm.lifecycle-fake",
        types_pb2.MODEL_TYPE_LLM,
    )

    await replica.drain()
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert recording.calls[0] == ("register", serving)
    assert recording.calls[-1] == ("deregister", not_serving), "NOT_SERVING before deregistering, and nothing after"
    assert recording.kinds().count("deregister") == 1
    with pytest.raises(grpc.aio.AioRpcError) as stopped:
        await replica_health(endpoint)
    assert stopped.value.code() == grpc.StatusCode.UNAVAILABLE, "the server has stopped"


async def test_drain_before_polling_never_calls_the_registry(
    registry: tuple[RecordingRegistry, str], temporal_address: str
) -> None:
    recording, registry_address = registry
    replica = fake_replica("lifecycle-unpolled", temporal_address, registry_address)
    await replica.serve()
    await replica.load()
    await replica.drain()
    assert recording.calls == []


async def _heartbeats(recording: RecordingRegistry, count: int) -> bool:
    return recording.kinds().count("heartbeat") >= count
