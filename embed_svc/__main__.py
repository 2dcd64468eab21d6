"""Run one embedding replica: EmbeddingService, the Temporal worker that calls it, and its registration."""

import asyncio
import contextlib

from temporalio.client import Client

from embed_svc.config import EmbedSettings
from embed_svc.server import load_and_serve, start_server, stop_server
from embed_svc.worker import EmbedActivities, create_worker
from llmorch_common.lifecycle import setup_logging, start_metrics, wait_for_termination
from llmorch_common.registration import Registration


async def serve(settings: EmbedSettings) -> None:
    log = setup_logging(f"embed[{settings.model_id}]")
    running = await start_server(settings)
    start_metrics(settings.metrics_port)
    log.info("listening on %s, loading %s", running.port, settings.model_path)
    await load_and_serve(running, settings)
    metadata = running.servicer.metadata
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    activities = EmbedActivities(f"localhost:{running.port}", settings.max_batch)
    worker = create_worker(
        client, metadata.task_queue, activities, settings.worker_concurrency, settings.drain_timeout_s
    )
    worker_task = asyncio.create_task(worker.run())
    registration = Registration(settings.registry_address, metadata, interval_s=1.0)
    # Embedding load is not routed on, so the heartbeat reports none; it keeps the registration alive.
    registering = asyncio.create_task(registration.run(lambda: 0)) if settings.registry_address else None
    log.info("SERVING %s on %s, polling %s", settings.model_id, running.port, metadata.task_queue)
    await wait_for_termination()

    log.info("draining")
    await running.health.enter_graceful_shutdown()
    if registering:
        registering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await registering
        await registration.deregister()
    await worker.shutdown()  # finishes in-flight activities, which still need the server
    await worker_task
    await activities.close()
    await stop_server(running, settings.drain_timeout_s)
    log.info("stopped")


if __name__ == "__main__":
    asyncio.run(serve(EmbedSettings()))
