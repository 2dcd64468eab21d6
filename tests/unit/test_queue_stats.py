"""The queue-depth gauge tells the truth: a failed read keeps the last reading instead of claiming an empty queue."""

import asyncio
from types import SimpleNamespace
from typing import Any

from prometheus_client import REGISTRY
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, DescribeTaskQueueResponse
from temporalio.service import RPCError, RPCStatusCode

from orchestrator_svc.registry.queue_stats import NO_LOAD, QueueStats


class FlakyTemporal:
    """Answers with a backlog of 3 once, then is unreachable."""

    namespace = "default"

    def __init__(self) -> None:
        self.calls = 0
        self.workflow_service = SimpleNamespace(describe_task_queue=self.describe_task_queue)

    async def describe_task_queue(self, request: DescribeTaskQueueRequest) -> DescribeTaskQueueResponse:
        self.calls += 1
        if self.calls > 1:
            raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")
        reply = DescribeTaskQueueResponse()
        reply.stats.approximate_backlog_count = 3
        return reply


def depth(queue: str) -> float | None:
    return REGISTRY.get_sample_value("llmorch_task_queue_backlog", {"task_queue": queue})


def test_a_failed_read_keeps_the_last_reading_and_routes_on_no_evidence() -> None:
    temporal: Any = FlakyTemporal()
    stats = QueueStats(temporal)
    assert asyncio.run(stats.load("llm.flaky")).backlog == 3
    stats._cache.clear()  # past the cache's lifetime
    assert asyncio.run(stats.load("llm.flaky")) == NO_LOAD, "no stats is no evidence of a backlog"
    assert temporal.calls == 2
    assert depth("llm.flaky") == 3, "the gauge kept its last reading (it used to drop to 0)"
