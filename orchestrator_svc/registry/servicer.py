"""RegistryService transport: registry protos to domain records and back; the rules live in the Registry."""

import grpc
from llmorch.internal.v1 import registry_pb2, registry_pb2_grpc

from llmorch_common.grpc_edge import unary_edge
from orchestrator_svc.registry.convert import (
    metadata_from_proto,
    model_type_from_proto,
    registered_to_proto,
)
from orchestrator_svc.registry.service import Registry

SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    @unary_edge
    async def Register(
        self, request: registry_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.RegisterResponse:
        model = await self._registry.register(metadata_from_proto(request.metadata))
        return registry_pb2.RegisterResponse(model=registered_to_proto(model))

    @unary_edge
    async def Heartbeat(
        self, request: registry_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.HeartbeatResponse:
        await self._registry.heartbeat(request.model_id, request.endpoint, request.in_flight)
        return registry_pb2.HeartbeatResponse()

    @unary_edge
    async def Deregister(
        self, request: registry_pb2.DeregisterRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.DeregisterResponse:
        await self._registry.deregister(request.model_id, request.endpoint)
        return registry_pb2.DeregisterResponse()

    @unary_edge
    async def ListModels(
        self, request: registry_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ListModelsResponse:
        models = await self._registry.live_models(model_type_from_proto(request.model_type))
        return registry_pb2.ListModelsResponse(models=[registered_to_proto(m) for m in models])

    @unary_edge
    async def GetModel(
        self, request: registry_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.GetModelResponse:
        return registry_pb2.GetModelResponse(model=registered_to_proto(self._registry.model(request.model_id)))


def register(server: grpc.aio.Server, servicer: RegistryServicer) -> list[str]:
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, server)
    return [SERVICE_NAME]
