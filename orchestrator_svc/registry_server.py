"""RegistryService transport over the Registry."""

import grpc
from llmorch.internal.v1 import registry_pb2, registry_pb2_grpc
from llmorch.v1 import types_pb2

from llmorch_common.grpc_edge import unary_edge
from orchestrator_svc.queue_stats import QueueStats
from orchestrator_svc.registry import Registry

SERVICE_NAME = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, registry: Registry, queue_stats: QueueStats | None) -> None:
        self._registry = registry
        self._queue_stats = queue_stats

    def llm_ids(self) -> set[str]:
        return {m.metadata.model_id for m in self._registry.models(types_pb2.MODEL_TYPE_LLM)}

    async def list_models(self, model_type: types_pb2.ModelType.ValueType) -> list[registry_pb2.RegisteredModel]:
        """Registered models with live health and, where Temporal answers, their queue backlog."""
        models = self._registry.models(model_type)
        if self._queue_stats:
            for model in models:
                model.queue_backlog = await self._queue_stats.backlog(model.metadata.task_queue)
        return models

    @unary_edge
    async def Register(
        self, request: registry_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.RegisterResponse:
        return registry_pb2.RegisterResponse(model=await self._registry.register(request.metadata))

    @unary_edge
    async def Heartbeat(
        self, request: registry_pb2.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.HeartbeatResponse:
        self._registry.heartbeat(request.model_id, request.endpoint, request.in_flight)
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
        return registry_pb2.ListModelsResponse(models=await self.list_models(request.model_type))

    @unary_edge
    async def GetModel(
        self, request: registry_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.GetModelResponse:
        return registry_pb2.GetModelResponse(model=self._registry.model(request.model_id))
