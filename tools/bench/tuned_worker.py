"""The orchestrator worker as `python -m orchestrator_svc worker` builds it, with the workflow runner swapped.

`python -m tools.bench.tuned_worker` measures a proposed change (no sandbox for InferenceWorkflow) without
editing orchestrator_svc: the Worker below mirrors orchestrator_svc.app.create_worker argument for argument.
"""

import asyncio

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from llmorch_common.lifecycle import setup_logging, wait_for_termination
from orchestrator_svc.activities import ControlActivities
from orchestrator_svc.config import OrchestratorSettings
from orchestrator_svc.ingestion import IngestionActivities, IngestionWorkflow
from orchestrator_svc.resources import Resources
from orchestrator_svc.workflows import InferenceWorkflow


async def main() -> None:
    settings = OrchestratorSettings()
    log = setup_logging("orchestrator-worker (bench: unsandboxed)")
    client = await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
    resources = await Resources.open(settings)
    control = ControlActivities(settings.registry_address, resources.store)
    ingestion = IngestionActivities(resources.store, resources.staging, resources.embeddings)
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[InferenceWorkflow, IngestionWorkflow],
        activities=[control.select_model, control.retrieve, ingestion.ingest_document, ingestion.release_staging],
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    log.info("polling %s", settings.task_queue)
    async with worker:
        await wait_for_termination()
    await control.close()
    await resources.close()


if __name__ == "__main__":
    asyncio.run(main())
