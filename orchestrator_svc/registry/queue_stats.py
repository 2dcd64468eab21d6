"""Task-queue load from Temporal's DescribeTaskQueue stats: the router's view of queued work, and a metric."""

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client import Gauge
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError

from orchestrator_svc.identity.keys import CLASS_OF_PRIORITY_KEY

QUEUE_DEPTH = Gauge("llmorch_task_queue_backlog", "Approximate tasks waiting per task queue", ["task_queue"])
QUEUE_AGE = Gauge("llmorch_task_queue_backlog_age_seconds", "Age of the oldest waiting task", ["task_queue"])
QUEUE_DEPTH_BY_CLASS = Gauge(
    "llmorch_task_queue_backlog_by_class",
    "Approximate tasks waiting per task queue and priority class",
    ["task_queue", "priority_class"],
)
# Stats are approximate and cost a round trip each; a short cache keeps selection cheap under load.
CACHE_TTL_S = 0.25
REFRESH_S = 5.0


@dataclass(frozen=True)
class QueueLoad:
    """What Temporal reports about one queue. The count alone is approximate and can drift (a task lost with a
    killed worker stayed counted for good), so the router also reads how old the waiting is and how fast it grows."""

    backlog: int = 0
    age_s: float = 0.0  # age of the oldest task waiting; 0 when none is
    add_rate: float = 0.0  # tasks added per second, recently
    dispatch_rate: float = 0.0  # tasks handed to workers per second, recently


NO_LOAD = QueueLoad()


class QueueStats:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._cache: dict[str, tuple[float, QueueLoad]] = {}

    async def load(self, task_queue: str) -> QueueLoad:
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
            stats = response.stats
            load = QueueLoad(
                backlog=int(stats.approximate_backlog_count),
                age_s=stats.approximate_backlog_age.ToTimedelta().total_seconds(),
                add_rate=float(stats.tasks_add_rate),
                dispatch_rate=float(stats.tasks_dispatch_rate),
            )
        except RPCError:
            # No stats is no evidence of a backlog (health decides availability); the gauges keep their last reading
            # rather than claim an empty queue.
            return NO_LOAD
        self._cache[task_queue] = (time.monotonic(), load)
        for key, by_key in response.stats_by_priority_key.items():
            label = CLASS_OF_PRIORITY_KEY.get(key, f"priority-{key}")
            QUEUE_DEPTH_BY_CLASS.labels(task_queue, label).set(int(by_key.approximate_backlog_count))
        QUEUE_DEPTH.labels(task_queue).set(load.backlog)
        QUEUE_AGE.labels(task_queue).set(load.age_s)
        return load

    async def refresh_forever(self, task_queues: Callable[[], Iterable[str]], interval_s: float = REFRESH_S) -> None:
        """Keep the gauges current whether or not anyone lists the models (they were refreshed only by listings)."""
        while True:
            for task_queue in task_queues():
                await self.load(task_queue)
            await asyncio.sleep(interval_s)

    async def backlog(self, task_queue: str) -> int:
        """The approximate count, for display (ListModels' queue depth); routing reads `load`."""
        return (await self.load(task_queue)).backlog
