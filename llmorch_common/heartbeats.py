"""Heartbeat a Temporal activity on a timer while it awaits one long call, so a slow machine is not a dead worker."""

import asyncio
from collections.abc import Callable
from contextlib import suppress


async def heartbeat_forever(details: Callable[[], object], interval_s: float) -> None:
    """Run as a task beside the work and cancel it after. Heartbeats also carry cancellation to the activity; the
    SDK throttles them, so their details may trail by seconds. The first one waits an interval: work shorter than
    that (most short requests) sends none, saving the server a heartbeat RPC and the details' conversion, well
    inside the heartbeat timeout."""
    from temporalio import activity

    with suppress(asyncio.CancelledError):
        while True:
            await asyncio.sleep(interval_s)
            activity.heartbeat(details())
