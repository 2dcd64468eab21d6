"""Process plumbing shared by every service: logging, metrics endpoint, and waiting for SIGTERM/SIGINT."""

import asyncio
import logging
import signal

from prometheus_client import start_http_server


def setup_logging(name: str) -> logging.Logger:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    return logging.getLogger(name)


def start_metrics(port: int) -> None:
    """Port 0 disables the endpoint, so several replicas in one test need not fight over ports."""
    if port:
        start_http_server(port)


async def wait_for_termination() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
