"""Run the orchestrator API (`python -m orchestrator_svc api`) or its worker (`... worker`)."""

import asyncio
import sys

from llmorch_common.lifecycle import sdk_metrics_runtime, setup_process, start_metrics, wait_for_termination
from llmorch_common.payload_codec import connect
from llmorch_common.registration import registration_token
from orchestrator_svc.app import create_worker, start_api
from orchestrator_svc.config import OrchestratorSettings
from orchestrator_svc.inference.activities import RemoteRegistry
from orchestrator_svc.resources import Resources


async def run_api(settings: OrchestratorSettings) -> None:
    log = setup_process("orchestrator-api")
    # The embedded worker runs most workflow tasks, so the API serves the SDK's metrics too, on a port of its own.
    runtime = sdk_metrics_runtime(settings.api_temporal_metrics_port)
    client = await connect(settings.temporal_address, settings.temporal_namespace, runtime)
    resources = await Resources.open(settings)
    api = await start_api(settings, client, resources, settings.api_embedded_worker)
    start_metrics(settings.metrics_port)
    log.info("SERVING on %s", api.port)
    await wait_for_termination()
    await api.stop(grace_s=10)
    await resources.close()


async def run_worker(settings: OrchestratorSettings) -> None:
    log = setup_process("orchestrator-worker")
    runtime = sdk_metrics_runtime(settings.temporal_metrics_port)
    client = await connect(settings.temporal_address, settings.temporal_namespace, runtime)
    resources = await Resources.open(settings)
    registry = RemoteRegistry(settings.registry_address, registration_token())
    worker = create_worker(client, settings, resources, registry.list_llms)
    start_metrics(settings.worker_metrics_port)
    log.info("polling %s", settings.task_queue)
    async with worker:
        await wait_for_termination()
    await registry.close()
    await resources.close()


def main() -> None:
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    runners = {"api": run_api, "worker": run_worker}
    if role not in runners:
        sys.exit("usage: python -m orchestrator_svc api|worker")
    asyncio.run(runners[role](OrchestratorSettings()))


if __name__ == "__main__":
    main()
