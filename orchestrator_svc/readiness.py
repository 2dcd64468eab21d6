"""Readiness that follows Temporal: the API cannot start or follow a request without it, so it says so in health."""

import asyncio
import logging
from datetime import timedelta

from grpc_health.v1 import health, health_pb2
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.service import RPCError

from llmorch_common.constants import READINESS_SERVICE

log = logging.getLogger(__name__)
CHECK_INTERVAL_S = 1.0
CHECK_TIMEOUT = timedelta(seconds=2)


async def follow_temporal(client: Client, health_servicer: health.aio.HealthServicer) -> None:
    """Set READINESS_SERVICE from a cheap Temporal call every second, for as long as the API runs."""
    ready: bool | None = None
    while True:
        try:
            await client.workflow_service.get_system_info(GetSystemInfoRequest(), timeout=CHECK_TIMEOUT)
            reachable = True
        except RPCError as error:
            reachable = False
            if ready is not False:
                log.warning("Temporal unreachable, readiness NOT_SERVING: %s", error)
        if reachable != ready:
            status = health_pb2.HealthCheckResponse.SERVING if reachable else health_pb2.HealthCheckResponse.NOT_SERVING
            await health_servicer.set(READINESS_SERVICE, status)
            ready = reachable
        await asyncio.sleep(CHECK_INTERVAL_S)
