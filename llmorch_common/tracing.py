"""OpenTelemetry for every process: one setup call from each entry point, and the gRPC and Temporal interceptors
that carry one trace from Envoy through the workflow to the model. Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set."""

import logging
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor, filters
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.client import Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor

log = logging.getLogger(__name__)
# Span attributes of the platform's own facts, under one prefix so a backend can list them together.
ATTRIBUTE_PREFIX = "llmorch."
# Probes arrive every few seconds from Envoy and Kubernetes; as spans they would bury the requests.
_TRACED = filters.negate(filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection")))


class TracingSettings(BaseSettings):
    """The standard OTel variable decides whether spans leave the process; the exporter reads the rest of them
    (OTEL_EXPORTER_OTLP_*, OTEL_BSP_*) itself."""

    model_config = SettingsConfigDict(env_prefix="OTEL_")

    exporter_otlp_endpoint: str = Field(
        "", description="OTLP gRPC collector, e.g. http://localhost:4317; empty: no tracing, no interceptors"
    )
    service_name: str = Field("", description="The service name on every span; empty: the process's own name")


class _State:
    enabled = False


def setup_tracing(service_name: str) -> bool:
    """Install the global tracer provider with an OTLP exporter when an endpoint is set; returns whether it did.

    Call it before any server, channel or Temporal client is made: they read `enabled()` once, when built."""
    settings = TracingSettings()
    endpoint = settings.exporter_otlp_endpoint
    if not endpoint:
        return False
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: settings.service_name or service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _State.enabled = True
    log.info("exporting traces to %s", endpoint)
    return True


def enabled() -> bool:
    return _State.enabled


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """A server span per RPC, a child of the caller's span (W3C traceparent in the metadata)."""
    return [aio_server_interceptor(filter_=_TRACED)] if enabled() else []  # type: ignore[no-untyped-call]


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """A client span per RPC, and traceparent in its metadata so the server's span joins the trace."""
    if not enabled():
        return []
    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors(filter_=_TRACED)  # type: ignore[no-untyped-call]
    return interceptors


def temporal_interceptors() -> list[Interceptor]:
    """Temporal's own tracing: it carries the context through workflow and activity headers, and being a worker
    interceptor too, every worker built on the client traces its workflows and activities."""
    return [TracingInterceptor()] if enabled() else []


def annotate(**attributes: Any) -> None:
    """Record facts on the current span (the RPC's, or Temporal's RunActivity span in an activity); empty values
    are left out. A no-op without tracing."""
    span = trace.get_current_span()
    for key, value in attributes.items():
        if value not in ("", None):
            span.set_attribute(ATTRIBUTE_PREFIX + key, value)


def current_trace_id() -> str:
    """The current trace as 32 hex digits, as backends show it; empty outside a trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""
