"""Run one model replica: ModelService, its Temporal worker and its registration."""

import asyncio
import contextlib

from llmorch.v1 import types_pb2
from temporalio.client import Client

from llmorch_common.constants import llm_task_queue
from llmorch_common.grpc_edge import create_server, set_serving
from llmorch_common.lifecycle import setup_logging, start_metrics, wait_for_termination
from llmorch_common.registration import Registration
from model_svc.catalog import CATALOG, fallback_entry, locate_weights
from model_svc.config import ModelSettings
from model_svc.engine import Engine, EnginePool, FakeEngine, LlamaEngine
from model_svc.server import SERVICE_NAME, ModelServicer, register
from model_svc.worker import ModelActivities, create_worker


def build_metadata(settings: ModelSettings, port: int) -> types_pb2.ModelMetadata:
    entry = CATALOG.get(settings.model_id) or fallback_entry(settings.model_id)
    return types_pb2.ModelMetadata(
        model_id=settings.model_id,
        model_name=settings.model_name or entry.model_name,
        model_type=types_pb2.MODEL_TYPE_LLM,
        priority=entry.priority if settings.priority is None else settings.priority,
        default_flag=entry.default_flag if settings.default_flag is None else settings.default_flag,
        max_concurrency=settings.max_concurrency,
        context_limit=settings.context_limit,
        hardware_type=types_pb2.HARDWARE_TYPE_GPU if settings.hardware_type == "gpu" else types_pb2.HARDWARE_TYPE_CPU,
        endpoint=f"{settings.advertise_host}:{port}",
        task_queue=llm_task_queue(settings.model_id),
    )


def load_engines(settings: ModelSettings) -> list[Engine]:
    if settings.engine == "fake":
        return [
            FakeEngine(settings.model_id, settings.context_limit, settings.fake_first_token_ms, settings.fake_token_ms)
            for _ in range(settings.max_concurrency)
        ]
    from pathlib import Path

    path = Path(settings.model_path) if settings.model_path else locate_weights(settings.model_id)
    chat = (CATALOG.get(settings.model_id) or fallback_entry(settings.model_id)).chat
    gpu = settings.hardware_type == "gpu"
    # One context per unit of max_concurrency; the weights are mmapped, so extra contexts cost only KV cache.
    return [
        LlamaEngine(path, chat, settings.context_limit, settings.n_threads, gpu)
        for _ in range(settings.max_concurrency)
    ]


async def serve(settings: ModelSettings) -> None:
    log = setup_logging(f"model[{settings.model_id}]")
    servicer = ModelServicer(types_pb2.ModelMetadata())
    server, port, health = await create_server(lambda s: register(s, servicer), settings.port, settings.host)
    servicer.metadata = build_metadata(settings, port)
    await server.start()
    start_metrics(settings.metrics_port)
    log.info("listening on %s, loading weights", port)
    servicer.pool = EnginePool(await asyncio.to_thread(load_engines, settings), settings.admission_timeout_s)
    await set_serving(health, [SERVICE_NAME], True)
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    activities = ModelActivities(f"localhost:{port}", client)
    worker = create_worker(client, servicer.metadata.task_queue, activities, settings.max_concurrency)
    registration = Registration(settings.registry_address, servicer.metadata, settings.heartbeat_interval_s)
    tasks = [asyncio.create_task(worker.run())]
    if settings.registry_address:
        tasks.append(asyncio.create_task(registration.run(lambda: servicer.in_flight)))
    log.info("SERVING %s on %s, polling %s", settings.model_id, port, servicer.metadata.task_queue)
    await wait_for_termination()

    log.info("draining")
    await health.enter_graceful_shutdown()
    if settings.registry_address:
        tasks[1].cancel()
        await registration.deregister()
    await worker.shutdown()  # waits for in-flight generations, up to graceful_shutdown_timeout
    servicer.draining = True
    await activities.close()
    await server.stop(settings.drain_timeout_s)
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    log.info("stopped")


if __name__ == "__main__":
    asyncio.run(serve(ModelSettings()))
