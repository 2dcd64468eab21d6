"""Assembly of the orchestrator's two processes, shared by __main__, the launcher and the tests."""

from dataclasses import dataclass

import grpc
from grpc_health.v1 import health
from llmorch.v1 import registry_pb2_grpc
from temporalio.client import Client
from temporalio.worker import Worker

from llmorch_common.grpc_edge import create_server, set_serving
from orchestrator_svc import api, registry_server, retrieval_server
from orchestrator_svc.activities import ControlActivities
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

    async def stop(self, grace_s: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        await self.registry.close()


async def start_api(settings: OrchestratorSettings, client: Client, resources: Resources) -> ApiServer:
    registry = Registry(settings.registry_db, settings.registry_stale_after_s)
    await registry.open()
    registry_servicer = registry_server.RegistryServicer(registry, QueueStats(client))
    retrieval = retrieval_server.RetrievalServicer(
        client, settings.task_queue, resources.store, resources.staging, resources.embeddings
    )
    servicer = api.OrchestratorServicer(client, settings, registry_servicer, resources.store)

    def register(server: grpc.aio.Server) -> list[str]:
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(registry_servicer, server)
        return [
            *api.register(server, servicer),
            *retrieval_server.register(server, retrieval),
            registry_server.SERVICE_NAME,
        ]

    server, port, health_servicer = await create_server(register, settings.port, settings.host)
    names = [api.SERVICE_NAME, retrieval_server.SERVICE_NAME, registry_server.SERVICE_NAME]
    await server.start()
    await set_serving(health_servicer, names, True)
    return ApiServer(server, port, health_servicer, registry, names)


def create_worker(
    client: Client, settings: OrchestratorSettings, resources: Resources
) -> tuple[Worker, ControlActivities]:
    control = ControlActivities(settings.registry_address, resources.store)
    ingestion = IngestionActivities(resources.store, resources.staging, resources.embeddings)
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[InferenceWorkflow, IngestionWorkflow],
        activities=[control.select_model, control.retrieve, ingestion.ingest_document, ingestion.release_staging],
    )
    return worker, control
