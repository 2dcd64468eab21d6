"""Process plumbing shared by every service: metrics endpoints, and waiting for SIGTERM/SIGINT."""

import asyncio
import logging
import signal

from prometheus_client import start_http_server
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from llmorch_common.logs import setup_logging
from llmorch_common.tracing import setup_tracing


def setup_process(service: str) -> logging.Logger:
    """What every entry point calls first: its logs, and its traces when an OTLP endpoint is set."""
    log = setup_logging(service)
    setup_tracing(service)
    return log


def start_metrics(port: int) -> None:
    """Port 0 disables the endpoint, so several replicas in one test need not fight over ports."""
    if port:
        start_http_server(port)


def sdk_metrics_runtime(port: int) -> Runtime | None:
    """A Temporal runtime that serves the SDK's own metrics (task latencies, slots, polls) on `port`; 0: none."""
    if not port:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"0.0.0.0:{port}")))


async def wait_for_termination() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
