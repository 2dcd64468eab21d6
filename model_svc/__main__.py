"""Run one model replica until SIGTERM, then drain."""

import asyncio

from llmorch_common.lifecycle import setup_logging, wait_for_termination
from model_svc.config import ModelSettings
from model_svc.replica import ModelReplica


async def serve(settings: ModelSettings) -> None:
    log = setup_logging(f"model[{settings.model_id}]")
    replica = ModelReplica(settings)
    await replica.start()
    await wait_for_termination()
    log.info("draining")
    await replica.drain()
    log.info("stopped")


if __name__ == "__main__":
    asyncio.run(serve(ModelSettings()))
