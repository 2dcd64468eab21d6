"""Run one embedding replica: EmbeddingService and the Temporal worker that calls it."""

import asyncio
import logging
import signal

from prometheus_client import start_http_server
from temporalio.client import Client

from embed_svc.config import EmbedSettings
from embed_svc.server import load_and_serve, start_server, stop_server
from embed_svc.worker import EmbedActivities, create_worker

log = logging.getLogger("embed_svc")


async def serve(settings: EmbedSettings) -> None:
    running = await start_server(settings)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    log.info("listening on %s, loading %s", running.port, settings.model_path)
    await load_and_serve(running, settings)
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    activities = EmbedActivities(f"localhost:{running.port}", settings.max_batch)
    worker = create_worker(
        client, running.servicer.metadata.task_queue, activities, settings.worker_concurrency, settings.drain_timeout_s
    )
    worker_task = asyncio.create_task(worker.run())
    # TODO(registration): register running.servicer.metadata with RegistryService at settings.registry_address,
    # heartbeat while serving, and deregister on drain, through the shared registration helper once it lands.
    log.info("SERVING %s on %s, polling %s", settings.model_id, running.port, running.servicer.metadata.task_queue)
    await _wait_for_termination()
    log.info("draining")
    await running.health.enter_graceful_shutdown()
    await worker.shutdown()  # finishes in-flight activities, which still need the server
    await worker_task
    await activities.close()
    await stop_server(running, settings.drain_timeout_s)
    log.info("stopped")


async def _wait_for_termination() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(EmbedSettings()))
