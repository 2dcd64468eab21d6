"""A rolling upgrade of the orchestrator workers (ADR 0013): requests started on the old code finish on the new
code, because the new code guards its changed commands with workflow.patched; without the guard the same upgrade
breaks every run in flight (non-determinism), which is what the replay tests over committed histories catch."""

import asyncio
import uuid
from datetime import timedelta
from functools import partial

from helpers import eventually
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

RELEASE = asyncio.Event()
PROBE = "UpgradeProbe"


@activity.defn(name="upgrade_generate")
async def generate(prompt: str) -> str:
    """Stands in for a generation still running while the workers are replaced."""
    await RELEASE.wait()
    return prompt.upper()


@activity.defn(name="upgrade_check")
async def check(prompt: str) -> str:
    return f"checked {prompt}"


def _generate(prompt: str) -> "workflow.ActivityHandle[str]":
    return workflow.start_activity(
        generate, prompt, task_queue=workflow.info().task_queue + "-act", start_to_close_timeout=timedelta(seconds=60)
    )


@workflow.defn(name=PROBE, sandboxed=False)
class OldCode:
    @workflow.run
    async def run(self, prompt: str) -> list[str]:
        return ["started", await _generate(prompt), "done"]


@workflow.defn(name=PROBE, sandboxed=False)
class NewCode:
    """Adds a step before the generation: a new command, so it runs only where the history allows it."""

    @workflow.run
    async def run(self, prompt: str) -> list[str]:
        steps = ["started"]
        if workflow.patched("check-before-generate"):
            steps.append(
                await workflow.execute_activity(
                    check,
                    prompt,
                    task_queue=workflow.info().task_queue + "-act",
                    start_to_close_timeout=timedelta(seconds=10),
                )
            )
        return [*steps, await _generate(prompt), "done"]


@workflow.defn(name=PROBE, sandboxed=False)
class UnguardedNewCode:
    @workflow.run
    async def run(self, prompt: str) -> list[str]:
        checked = await workflow.execute_activity(
            check, prompt, task_queue=workflow.info().task_queue + "-act", start_to_close_timeout=timedelta(seconds=10)
        )
        return ["started", checked, await _generate(prompt), "done"]


def workflow_worker(client: Client, queue: str, code: type) -> Worker:
    # No sticky cache: the new worker replays each run from its history, as a restarted process does.
    return Worker(
        client, task_queue=queue, workflows=[code], workflow_runner=UnsandboxedWorkflowRunner(), max_cached_workflows=0
    )


async def generation_started(client: Client, handle: WorkflowHandle[object, object]) -> bool:
    history = await handle.fetch_history()
    return any(
        e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "upgrade_generate"
        for e in history.events
    )


async def test_runs_started_on_old_code_complete_on_new_code(temporal_client: Client) -> None:
    queue = f"upgrade-{uuid.uuid4().hex[:8]}"
    RELEASE.clear()
    async with Worker(temporal_client, task_queue=queue + "-act", activities=[generate, check]):
        async with workflow_worker(temporal_client, queue, OldCode):
            old = [
                await temporal_client.start_workflow(PROBE, f"old-{i}", id=f"{queue}-old-{i}", task_queue=queue)
                for i in range(3)
            ]
            for handle in old:
                await eventually(partial(generation_started, temporal_client, handle), timeout_s=20)
        # The old workers are gone mid-request; the new code takes over every run in flight and every new one.
        async with workflow_worker(temporal_client, queue, NewCode):
            new = await temporal_client.start_workflow(PROBE, "new", id=f"{queue}-new", task_queue=queue)
            RELEASE.set()
            results = [await asyncio.wait_for(h.result(), 30) for h in old]
            assert results == [["started", f"OLD-{i}", "done"] for i in range(3)]
            assert await asyncio.wait_for(new.result(), 30) == ["started", "checked new", "NEW", "done"]


async def test_the_same_change_unguarded_breaks_runs_in_flight(temporal_client: Client) -> None:
    queue = f"upgrade-{uuid.uuid4().hex[:8]}"
    RELEASE.clear()
    async with Worker(temporal_client, task_queue=queue + "-act", activities=[generate, check]):
        async with workflow_worker(temporal_client, queue, OldCode):
            handle = await temporal_client.start_workflow(PROBE, "old", id=f"{queue}-old", task_queue=queue)
            await eventually(partial(generation_started, temporal_client, handle), timeout_s=20)
        async with workflow_worker(temporal_client, queue, UnguardedNewCode):
            RELEASE.set()

            async def task_failed() -> bool:
                history = await handle.fetch_history()
                return any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in history.events)

            await eventually(task_failed, timeout_s=30)
        await handle.terminate("test over")
