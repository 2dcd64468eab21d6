"""The dev server's dispatch cost on a minimal workflow (one no-op activity), with and without eager start.

Client and worker share this process on purpose: eager workflow start only applies when the starting client's
own worker polls the task queue. No orchestrator code runs here, so the numbers are Temporal's alone.
"""

import statistics
import time
import uuid
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from tools.stack import Stack, StackConfig

QUEUE = "micro"
OTHER_QUEUE = "micro-activities"


@activity.defn
async def noop(value: int) -> int:
    return value


@workflow.defn
class OneActivity:
    @workflow.run
    async def run(self, queue: str) -> int:
        result: int = await workflow.execute_activity(
            noop, 1, task_queue=queue or None, start_to_close_timeout=timedelta(seconds=10)
        )
        return result


VARIANTS = (
    ("lazy start, activity on the workflow's queue", False, ""),
    ("eager start, activity on the workflow's queue", True, ""),
    ("lazy start, activity on another queue (as generate on llm.<model>)", False, OTHER_QUEUE),
    ("eager start, activity on another queue", True, OTHER_QUEUE),
)


def segments(events: list[Any]) -> dict[str, float]:
    times: dict[int, list[float]] = {}
    for event in events:
        times.setdefault(event.event_type, []).append(float(event.event_time.ToMicroseconds()) / 1000)
    scheduled = times[EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED]
    started = times[EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED]
    return {
        "first_wft_dispatch_ms": started[0] - scheduled[0],
        "activity_dispatch_ms": times[EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED][0]
        - times[EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED][0],
        "last_wft_dispatch_ms": started[-1] - scheduled[-1],
        "workflow_tasks": float(len(times[EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED])),
        "workflow_total_ms": times[EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED][0]
        - times[EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED][0],
    }


SERVERS = (
    ("server defaults", StackConfig(temporal_tuned=False)),
    ("tuned as shipped", StackConfig()),
)


async def run(quick: bool) -> dict[str, Any]:
    rows = []
    for server_label, config in SERVERS:
        rows += await run_server(server_label, config, 15 if quick else 40)
    return {"rows": rows}


async def run_server(server_label: str, config: StackConfig, runs: int) -> list[dict[str, Any]]:
    stack = Stack(config)
    rows = []
    try:
        await stack.start_temporal()
        client = await Client.connect(stack.temporal_address)
        # Unsandboxed: this module imports the harness, which the sandbox has no reason to re-import.
        workflows = Worker(
            client,
            task_queue=QUEUE,
            workflows=[OneActivity],
            activities=[noop],
            workflow_runner=UnsandboxedWorkflowRunner(),
        )
        activities = Worker(client, task_queue=OTHER_QUEUE, activities=[noop])
        async with workflows, activities:
            for label, eager, queue in VARIANTS:
                for _ in range(3):  # warm-up
                    await client.execute_workflow(OneActivity.run, queue, id=uuid.uuid4().hex, task_queue=QUEUE)
                latencies, ids = [], []
                for _ in range(runs):
                    workflow_id = uuid.uuid4().hex
                    started = time.perf_counter()
                    await client.execute_workflow(
                        OneActivity.run, queue, id=workflow_id, task_queue=QUEUE, request_eager_start=eager
                    )
                    latencies.append((time.perf_counter() - started) * 1000)
                    ids.append(workflow_id)
                histories = [segments(list((await client.get_workflow_handle(i).fetch_history()).events)) for i in ids]
                row: dict[str, Any] = {"variant": f"{server_label}: {label}", "eager_start": eager, "runs": runs}
                row["client_latency_ms"] = round(statistics.median(latencies), 2)
                for key in histories[0]:
                    row[key] = round(statistics.median(h[key] for h in histories), 2)
                rows.append(row)
                print(f"  micro {row['variant']}: {row}", flush=True)
    finally:
        await stack.stop()
    return rows
