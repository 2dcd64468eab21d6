"""Run one embedding replica until SIGTERM, then drain."""

import asyncio

from embed_svc.config import EmbedSettings
from embed_svc.replica import EmbedReplica
from llmorch_common.lifecycle import setup_process
from llmorch_common.replica import run_until_terminated

if __name__ == "__main__":
    settings = EmbedSettings()
    setup_process(f"embed-{settings.model_id}")
    asyncio.run(run_until_terminated(EmbedReplica(settings)))
