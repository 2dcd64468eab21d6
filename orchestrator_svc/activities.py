"""Control-plane activities of the orchestrator worker: selection reads live registry state here, not in workflows."""

from collections.abc import Awaitable, Callable

import grpc
from llmorch.internal.v1 import registry_pb2, registry_pb2_grpc
from llmorch.v1 import types_pb2
from temporalio import activity
from temporalio.exceptions import ApplicationError

from llmorch_common.contracts import CitationRecord, ModelChoice, RetrieveInput, SelectModelInput
from llmorch_common.errors import PlatformError
from llmorch_common.grpc_edge import make_channel
from orchestrator_svc.router import Candidate, select
from orchestrator_svc.vectorstore.base import VectorStore

SELECT_MODEL_ACTIVITY = "select_model"
RETRIEVE_ACTIVITY = "retrieve"


def candidate_from(model: registry_pb2.RegisteredModel) -> Candidate:
    return Candidate(
        model_id=model.metadata.model_id,
        task_queue=model.metadata.task_queue,
        priority=model.metadata.priority,
        default_flag=model.metadata.default_flag,
        healthy=model.health == types_pb2.HEALTH_STATE_SERVING,
        in_flight=model.in_flight,
        capacity=model.capacity,
        backlog=model.queue_backlog,
        context_limit=model.metadata.context_limit,
        registration_order=model.registration_order,
    )


ModelLister = Callable[[], Awaitable[list[registry_pb2.RegisteredModel]]]


class RemoteRegistry:
    """The registry over gRPC, for a worker in its own process."""

    def __init__(self, address: str) -> None:
        self._channel = make_channel(address, registry_pb2.DESCRIPTOR.services_by_name["RegistryService"])
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)

    async def list_llms(self) -> list[registry_pb2.RegisteredModel]:
        try:
            listing = await self._stub.ListModels(
                registry_pb2.ListModelsRequest(model_type=types_pb2.MODEL_TYPE_LLM), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            raise ApplicationError(f"registry unreachable: {error.details()}", type="UNAVAILABLE") from None
        return list(listing.models)

    async def close(self) -> None:
        await self._channel.close()


class ControlActivities:
    def __init__(self, list_models: ModelLister, store: VectorStore) -> None:
        """`list_models` is the registry in-process (worker inside the API) or RemoteRegistry.list_llms."""
        self._list_models = list_models
        self._store = store

    @activity.defn(name=SELECT_MODEL_ACTIVITY)
    async def select_model(self, request: SelectModelInput) -> ModelChoice:
        models = await self._list_models()
        try:
            return select([candidate_from(m) for m in models], request.requested_model_id, frozenset(request.excluded))
        except PlatformError as error:
            # A routing verdict is final for this selection; the workflow decides what it means.
            raise ApplicationError(error.message, type=error.code, non_retryable=True) from None

    @activity.defn(name=RETRIEVE_ACTIVITY)
    async def retrieve(self, request: RetrieveInput) -> list[CitationRecord]:
        try:
            hits = await self._store.query(request.collection, request.vector, request.top_k)
        except PlatformError as error:
            raise ApplicationError(error.message, type=error.code, non_retryable=True) from None
        return [CitationRecord(h.id, h.document_id, h.score, h.text) for h in hits]
