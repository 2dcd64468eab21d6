"""Replay committed workflow histories against today's workflow code, so non-determinism fails here, not in production.

Refresh the histories with `LLMORCH_RECORD_HISTORIES=1 pytest tests/workflow` after an intended, versioned change.
"""

from pathlib import Path

import pytest
from helpers import HISTORIES
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from orchestrator_svc.inference.workflows import InferenceWorkflow
from orchestrator_svc.retrieval.ingestion import IngestionWorkflow

RECORDED = sorted(HISTORIES.glob("*.json"))


def test_histories_are_committed() -> None:
    names = {path.stem for path in RECORDED}
    assert {"inference_fallback", "inference_rag", "inference_stream", "ingestion_worker_killed"} <= names
    # Recorded after resumption (ADR 0010), beside the older ones that must still replay.
    assert {"inference_stream_resumed", "inference_fallback_continued", "inference_cancelled"} <= names
    # Recorded with the completion cache (ADR 0017): a hit, and a grounded miss that stores its answer.
    assert {"inference_cache_hit", "inference_cache_miss_rag"} <= names


@pytest.mark.parametrize("path", RECORDED, ids=lambda path: path.stem)
async def test_history_replays_deterministically(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    # Always in the sandbox, even though the workers run without it: this is where non-determinism is caught.
    replayer = Replayer(workflows=[InferenceWorkflow, IngestionWorkflow], workflow_runner=SandboxedWorkflowRunner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
