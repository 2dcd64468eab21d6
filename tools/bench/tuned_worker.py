"""The orchestrator worker as `python -m orchestrator_svc worker` builds it, but without the workflow sandbox.

`python -m tools.bench.tuned_worker` measures what the sandbox costs per request (bench: throughput section).
"""

import asyncio

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner

from llmorch_common.lifecycle import setup_logging, wait_for_termination
from orchestrator_svc.activities import RemoteRegistry
from orchestrator_svc.app import create_worker
from orchestrator_svc.config import OrchestratorSettings
from orchestrator_svc.resources import Resources


async def main() -> None:
    settings = OrchestratorSettings()
    log = setup_logging("orchestrator-worker (bench: unsandboxed)")
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    resources = await Resources.open(settings)
    registry = RemoteRegistry(settings.registry_address)
    worker = create_worker(client, settings, resources, registry.list_llms, UnsandboxedWorkflowRunner())
    log.info("polling %s", settings.task_queue)
    async with worker:
        await wait_for_termination()
    await registry.close()
    await resources.close()


if __name__ == "__main__":
    asyncio.run(main())
