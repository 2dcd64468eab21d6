"""Run one model replica until SIGTERM, then drain."""

import asyncio

from llmorch_common.lifecycle import setup_process
from llmorch_common.replica import run_until_terminated
from model_svc.config import ModelSettings
from model_svc.replica import ModelReplica

if __name__ == "__main__":
    settings = ModelSettings()
    setup_process(f"model-{settings.model_id}")
    asyncio.run(run_until_terminated(ModelReplica(settings)))
