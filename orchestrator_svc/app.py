"""Assembly of the orchestrator's processes, shared by __main__ and the tests."""

import asyncio
import contextlib
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from llmorch_common.constants import LIVENESS_SERVICE, READINESS_SERVICE
from llmorch_common.grpc_edge import AuthGate, create_server, set_serving
from llmorch_common.redis_cache import connect as redis_client
from llmorch_common.registration import registration_check, registration_token
from orchestrator_svc.config import OrchestratorSettings
from orchestrator_svc.identity.caller import key_gate
from orchestrator_svc.identity.limits import RateLimiter
from orchestrator_svc.identity.service import KeyChecker
from orchestrator_svc.identity.store import KeyStore
from orchestrator_svc.inference import servicer as inference
from orchestrator_svc.inference.activities import ModelLister, SelectionActivities
from orchestrator_svc.inference.cache import CacheActivities
from orchestrator_svc.inference.service import InferenceService
from orchestrator_svc.inference.workflows import InferenceWorkflow
from orchestrator_svc.openai_http.app import OpenAIFacade, create_app
from orchestrator_svc.openai_http.server import HttpServer
from orchestrator_svc.readiness import follow_temporal
from orchestrator_svc.registry import servicer as registry
from orchestrator_svc.registry.queue_stats import QueueStats
from orchestrator_svc.registry.records import ModelType, RegisteredModel
from orchestrator_svc.registry.service import Registry
from orchestrator_svc.registry.store import open_store
from orchestrator_svc.resources import Resources
from orchestrator_svc.retrieval import servicer as retrieval
from orchestrator_svc.retrieval.activities import RetrievalActivities
from orchestrator_svc.retrieval.ingestion import IngestionActivities, IngestionWorkflow
from orchestrator_svc.retrieval.service import RetrievalService
from orchestrator_svc.retrieval.vectorstore.base import RetrievalMode


@dataclass
class ApiServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    registry: Registry
    service: InferenceService
    service_names: list[str]
    internal: grpc.aio.Server  # RegistryService, for the platform's own components
    internal_port: int
    internal_health: health.aio.HealthServicer
    keys: KeyStore
    background: tuple[asyncio.Task[None], ...]  # readiness and the queue-depth gauges, for the API's lifetime
    worker: Worker | None = None
    http: HttpServer | None = None  # the OpenAI-compatible facade, unless settings.http_port is -1
    _worker_task: asyncio.Task[None] | None = field(default=None, repr=False)

    async def stop(self, grace_s: float) -> None:
        for task in self.background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.health.enter_graceful_shutdown()
        if self.http:
            await self.http.stop()
        if self.worker and self._worker_task:
            await self.worker.shutdown()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker_task
        await self.server.stop(grace_s)
        await self.internal_health.enter_graceful_shutdown()
        await self.internal.stop(grace_s)
        await self.registry.close()
        await self.keys.close()


async def start_api(
    settings: OrchestratorSettings, client: Client, resources: Resources, embedded_worker: bool
) -> ApiServer:
    """The API server; with `embedded_worker`, also a worker on the API's own client.

    That worker is what makes eager workflow start possible: Temporal hands the first workflow task back in the
    start response, saving a dispatch, and model selection reads the registry in-process instead of over gRPC.
    """
    queue_stats = QueueStats(client)
    model_registry = Registry(
        await open_store(settings.database_url),
        settings.registry_stale_after_s,
        queue_stats.backlog,
        settings.registry_load_ttl_s,
        settings.registry_sync_interval_s,
    )
    await model_registry.open()
    keys = await KeyStore.open(settings.database_url)
    limits = RateLimiter(keys, lease_ttl_s=settings.request_timeout_s)

    async def list_llms() -> list[RegisteredModel]:
        return await model_registry.live_models(ModelType.LLM)

    # The API selects each request's first model itself, from the same registry and queue stats as its worker.
    first_model = SelectionActivities(list_llms, queue_stats.load).choose
    service = InferenceService(
        client, settings, model_registry, resources.store, resources.embeddings, limits, first_model
    )
    retrieval_service = RetrievalService(
        client,
        settings.task_queue,
        resources.store,
        resources.staging,
        resources.embeddings,
        RetrievalMode(settings.retrieval_mode),
    )

    def register(server: grpc.aio.Server) -> list[str]:
        return [
            *inference.register(server, inference.OrchestratorServicer(service, model_registry)),
            *retrieval.register(server, retrieval.RetrievalServicer(retrieval_service)),
        ]

    def register_internal(server: grpc.aio.Server) -> list[str]:
        return registry.register(server, registry.RegistryServicer(model_registry))

    # Two listeners: the public one (every call needs an API key) and the internal one, which serves the control
    # plane only to holders of the registration credential, so no caller of the public API can register a model.
    key_checker = KeyChecker(keys, settings.key_cache_ttl_s)
    server, port, health_servicer = await create_server(register, settings.port, settings.host, key_gate(key_checker))
    internal, internal_port, internal_health = await create_server(
        register_internal,
        settings.internal_port,
        settings.internal_host,
        AuthGate(registration_check(registration_token())),
    )
    names = [inference.SERVICE_NAME, retrieval.SERVICE_NAME, LIVENESS_SERVICE]
    await health_servicer.set(READINESS_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)  # until Temporal answers
    background = (
        asyncio.create_task(follow_temporal(client, health_servicer)),
        asyncio.create_task(
            queue_stats.refresh_forever(lambda: [m.metadata.task_queue for m in model_registry.models()])
        ),
    )
    started = ApiServer(
        server,
        port,
        health_servicer,
        model_registry,
        service,
        names,
        internal,
        internal_port,
        internal_health,
        keys,
        background,
    )
    if embedded_worker:
        started.worker = create_worker(client, settings, resources, list_llms, queue_stats)
        started._worker_task = asyncio.create_task(started.worker.run())
    if settings.http_port >= 0:
        # The same key check as the gRPC gate: one key works on both surfaces, for the same tenant.
        facade = OpenAIFacade(service, model_registry, key_checker)
        started.http = await HttpServer(create_app(facade), settings.host, settings.http_port).start()
    await internal.start()
    await set_serving(internal_health, [registry.SERVICE_NAME], True)
    await server.start()
    await set_serving(health_servicer, names, True)
    return started


def create_worker(
    client: Client,
    settings: OrchestratorSettings,
    resources: Resources,
    list_models: ModelLister,
    queue_stats: QueueStats | None = None,
) -> Worker:
    """`queue_stats` defaults to stats read on the worker's own client."""
    selection = SelectionActivities(list_models, (queue_stats or QueueStats(client)).load)
    cache = CacheActivities(redis_client(settings.redis_url) if settings.redis_url else None)
    retrieval_activities = RetrievalActivities(resources.store)
    ingestion = IngestionActivities(resources.store, resources.staging, resources.embeddings)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[InferenceWorkflow, IngestionWorkflow],
        activities=[
            selection.select_model,
            retrieval_activities.retrieve,
            ingestion.ingest_document,
            ingestion.release_staging,
            cache.cache_lookup,
            cache.cache_store,
        ],
        workflow_runner=SandboxedWorkflowRunner() if settings.workflow_sandbox else UnsandboxedWorkflowRunner(),
    )
