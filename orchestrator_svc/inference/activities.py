"""The select_model activity: selection reads the registry's live state here, never inside the workflow."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from llmorch.internal.v1 import registry_pb2, registry_pb2_grpc
from llmorch.v1 import types_pb2
from temporalio import activity

from llmorch_common.errors import PlatformError, from_rpc, to_activity_failure, to_final_failure, unavailable
from llmorch_common.grpc_edge import make_channel
from llmorch_common.tracing import annotate
from orchestrator_svc.inference.contracts import ModelChoice
from orchestrator_svc.inference.router import Candidate, select
from orchestrator_svc.registry.convert import registered_from_proto
from orchestrator_svc.registry.queue_stats import NO_LOAD, QueueLoad
from orchestrator_svc.registry.records import Health, RegisteredModel

SELECT_MODEL_ACTIVITY = "select_model"


@dataclass(frozen=True)
class SelectModelInput:
    requested_model_id: str
    excluded: tuple[str, ...] = ()
    # Which selection of the request this is, from 1 (recorded on the span; 0 from runs that predate it).
    attempt: int = 0


def candidate_from(model: RegisteredModel, load: QueueLoad = NO_LOAD) -> Candidate:
    """`model.in_flight` counts only replicas heard from within the registry's load TTL."""
    metadata = model.metadata
    return Candidate(
        model_id=metadata.model_id,
        task_queue=metadata.task_queue,
        priority=metadata.priority,
        default_flag=metadata.default_flag,
        healthy=model.health == Health.SERVING,
        in_flight=model.in_flight,
        capacity=model.capacity,
        backlog=load.backlog,
        context_limit=metadata.context_limit,
        registration_order=model.registration_order,
        backlog_age_s=load.age_s,
        backlog_add_rate=load.add_rate,
        backlog_dispatch_rate=load.dispatch_rate,
        model_digest=metadata.model_digest,
    )


ModelLister = Callable[[], Awaitable[list[RegisteredModel]]]
QueueLoadReader = Callable[[str], Awaitable[QueueLoad]]


async def _no_queue_stats(task_queue: str) -> QueueLoad:
    return NO_LOAD


class RemoteRegistry:
    """The registry over gRPC, for a worker in its own process."""

    def __init__(self, address: str, token: str) -> None:
        self._channel = make_channel(address, registry_pb2.DESCRIPTOR.services_by_name["RegistryService"], token=token)
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)

    async def list_llms(self) -> list[RegisteredModel]:
        try:
            listing = await self._stub.ListModels(
                registry_pb2.ListModelsRequest(model_type=types_pb2.MODEL_TYPE_LLM), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            unreachable = from_rpc(error)
            raise to_activity_failure(unavailable(f"registry unreachable: {unreachable.message}")) from None
        return [registered_from_proto(model) for model in listing.models]

    async def close(self) -> None:
        await self._channel.close()


class SelectionActivities:
    def __init__(self, list_models: ModelLister, queue_load: QueueLoadReader = _no_queue_stats) -> None:
        """`list_models` is the registry in-process (worker inside the API) or RemoteRegistry.list_llms;
        `queue_load` is Temporal's queue stats (QueueStats.load), read by each worker on its own client."""
        self._list_models = list_models
        self._queue_load = queue_load

    async def choose(self, request: SelectModelInput) -> ModelChoice:
        """The router's verdict on the registry's live state; a PlatformError when nothing can serve."""
        models = await self._list_models()
        candidates = [candidate_from(m, await self._queue_load(m.metadata.task_queue)) for m in models]
        choice = select(candidates, request.requested_model_id, frozenset(request.excluded))
        annotate(model_id=choice.model_id, selection_reason=choice.reason, attempt=request.attempt)
        return choice

    @activity.defn(name=SELECT_MODEL_ACTIVITY)
    async def select_model(self, request: SelectModelInput) -> ModelChoice:
        try:
            return await self.choose(request)
        except PlatformError as error:
            # A routing verdict is final for this selection; the workflow decides what it means.
            raise to_final_failure(error) from None
