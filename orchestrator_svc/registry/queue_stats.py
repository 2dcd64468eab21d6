"""Task-queue backlog from Temporal's DescribeTaskQueue stats: the router's view of queued work, and a metric."""

import time

from prometheus_client import Gauge
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

QUEUE_DEPTH = Gauge("llmorch_task_queue_backlog", "Approximate tasks waiting per task queue", ["task_queue"])
# Stats are approximate and cost a round trip each; a short cache keeps selection cheap under load.
CACHE_TTL_S = 0.25


class QueueStats:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._cache: dict[str, tuple[float, int]] = {}

    async def backlog(self, task_queue: str) -> int:
        cached = self._cache.get(task_queue)
        if cached and time.monotonic() - cached[0] < CACHE_TTL_S:
            return cached[1]
        try:
            response = await self._client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=self._client.namespace,
                    task_queue=TaskQueue(name=task_queue),
                    task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
                    report_stats=True,
                )
            )
            count = int(response.stats.approximate_backlog_count)
        except RPCError:
            count = 0  # no stats is no evidence of a backlog; health decides availability
        self._cache[task_queue] = (time.monotonic(), count)
        QUEUE_DEPTH.labels(task_queue).set(count)
        return count
