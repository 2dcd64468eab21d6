"""Assembly of the orchestrator's processes, shared by __main__, the launcher and the tests."""

import asyncio
import contextlib
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health
from llmorch.internal.v1 import registry_pb2, registry_pb2_grpc
from llmorch.v1 import types_pb2
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from llmorch_common.grpc_edge import create_server, set_serving
from orchestrator_svc import api, registry_server, retrieval_server
from orchestrator_svc.activities import ControlActivities, ModelLister
from orchestrator_svc.config import OrchestratorSettings
from orchestrator_svc.ingestion import IngestionActivities, IngestionWorkflow
from orchestrator_svc.queue_stats import QueueStats
from orchestrator_svc.registry import Registry
from orchestrator_svc.resources import Resources
from orchestrator_svc.workflows import InferenceWorkflow


@dataclass
class ApiServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    registry: Registry
    service_names: list[str]
    worker: Worker | None = None
    _worker_task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def stop(self, grace_s: float) -> None:
        await self.health.enter_graceful_shutdown()
        if self.worker and self._worker_task:
            await self.worker.shutdown()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker_task
        await self.server.stop(grace_s)
        await self.registry.close()


async def start_api(
    settings: OrchestratorSettings, client: Client, resources: Resources, embedded_worker: bool
) -> ApiServer:
    """The API server; with `embedded_worker`, also a worker on the API's own client.

    That worker is what makes eager workflow start possible: Temporal hands the first workflow task back in the
    start response, saving a dispatch, and model selection reads the registry in-process instead of over gRPC.
    """
    registry = Registry(settings.registry_db, settings.registry_stale_after_s)
    await registry.open()
    registry_servicer = registry_server.RegistryServicer(registry, QueueStats(client))
    retrieval = retrieval_server.RetrievalServicer(
        client, settings.task_queue, resources.store, resources.staging, resources.embeddings
    )
    servicer = api.OrchestratorServicer(client, settings, registry_servicer, resources.store, resources.embeddings)

    def register(server: grpc.aio.Server) -> list[str]:
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(registry_servicer, server)
        return [
            *api.register(server, servicer),
            *retrieval_server.register(server, retrieval),
            registry_server.SERVICE_NAME,
        ]

    # RegistryService still shares this port (an internal listener is planned), but reflection here is public.
    server, port, health_servicer = await create_server(
        register, settings.port, settings.host, unlisted=[registry_server.SERVICE_NAME]
    )
    names = [api.SERVICE_NAME, retrieval_server.SERVICE_NAME, registry_server.SERVICE_NAME]
    started = ApiServer(server, port, health_servicer, registry, names)
    if embedded_worker:

        async def list_llms() -> list[registry_pb2.RegisteredModel]:
            return await registry_servicer.list_models(types_pb2.MODEL_TYPE_LLM)

        started.worker = create_worker(client, settings, resources, list_llms)
        started._worker_task = asyncio.create_task(started.worker.run())
    await server.start()
    await set_serving(health_servicer, names, True)
    return started


def create_worker(
    client: Client, settings: OrchestratorSettings, resources: Resources, list_models: ModelLister
) -> Worker:
    control = ControlActivities(list_models, resources.store)
    ingestion = IngestionActivities(resources.store, resources.staging, resources.embeddings)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[InferenceWorkflow, IngestionWorkflow],
        activities=[control.select_model, control.retrieve, ingestion.ingest_document, ingestion.release_staging],
        workflow_runner=SandboxedWorkflowRunner() if settings.workflow_sandbox else UnsandboxedWorkflowRunner(),
    )
