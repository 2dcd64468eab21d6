"""The transport edge: every handler leaves through it (never UNKNOWN), server plumbing (health, reflection) and
channels."""

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Counter, Histogram
from temporalio import activity

from llmorch_common.errors import from_exception, to_status
from llmorch_common.tracing import client_interceptors, server_interceptors

log = logging.getLogger(__name__)

RPC_REQUESTS = Counter("llmorch_rpc_requests_total", "RPCs handled, by method and status code", ["method", "code"])
RPC_LATENCY = Histogram("llmorch_rpc_duration_seconds", "RPC handling time, by method", ["method"])

Handler = TypeVar("Handler", bound=Callable[..., Any])


@contextlib.asynccontextmanager
async def _edge(name: str, context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """Count the call by outcome and turn any failure into a precise status (never UNKNOWN)."""
    started = time.perf_counter()
    try:
        yield
    except grpc.aio.AbortError:
        RPC_REQUESTS.labels(name, "ABORTED_BY_HANDLER").inc()
        raise
    except Exception as error:  # the edge: anything left becomes a status
        platform_error = from_exception(error)
        RPC_REQUESTS.labels(name, platform_error.code).inc()
        await context.abort_with_status(to_status(platform_error))
    RPC_REQUESTS.labels(name, "OK").inc()
    RPC_LATENCY.labels(name).observe(time.perf_counter() - started)


def unary_edge(method: Handler) -> Handler:
    """Wrap a unary handler so that it leaves through the edge."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with _edge(f"{type(self).__name__}.{method.__name__}", context):
            return await method(self, request, context)

    return wrapper  # type: ignore[return-value]


def stream_edge(method: Handler) -> Handler:
    """Wrap a server-streaming handler so that it leaves through the edge."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with _edge(f"{type(self).__name__}.{method.__name__}", context):
            async for item in method(self, request, context):
                yield item

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class Undecodable:
    """What a guarded deserializer hands on for bytes that are not the request message."""

    reason: str


def _tolerant(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:  # DecodeError, and whatever else a malformed message raises
            return Undecodable(f"{type(error).__name__}: {error}")

    return deserialize


async def _reject(context: grpc.aio.ServicerContext, request: Undecodable) -> None:
    await context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, f"the request bytes are not a valid message ({request.reason})"
    )


async def _checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            await _reject(context, request)
        yield request


def _guard_unary_request(behavior: Any) -> Any:
    """The same kind of callable as `behavior` (grpc.aio tells coroutines from async generators by the function)."""
    if inspect.iscoroutinefunction(behavior):

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                await _reject(context, request)
            return await behavior(request, context)

        return call

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, Undecodable):
            await _reject(context, request)
        async for response in behavior(request, context):
            yield response

    return stream


def _guard_request_stream(behavior: Any) -> Any:
    if inspect.iscoroutinefunction(behavior):

        async def call(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            return await behavior(_checked(requests, context), context)

        return call

    async def stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for response in behavior(_checked(requests, context), context):
            yield response

    return stream


class DecodeGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Bytes that do not decode as the request get INVALID_ARGUMENT, on every service (health and reflection too);
    grpc.aio would answer UNKNOWN ("Unexpected DecodeError") before any handler ran."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        deserialize, serialize = _tolerant(handler.request_deserializer), handler.response_serializer
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _guard_unary_request(handler.unary_unary), deserialize, serialize
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _guard_unary_request(handler.unary_stream), deserialize, serialize
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _guard_request_stream(handler.stream_unary), deserialize, serialize
            )
        return grpc.stream_stream_rpc_method_handler(
            _guard_request_stream(handler.stream_stream), deserialize, serialize
        )


async def create_server(
    register: Callable[[grpc.aio.Server], Iterable[str]],
    port: int,
    host: str = "0.0.0.0",
    unlisted: Collection[str] = (),
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Build a server with health (NOT_SERVING until the caller says otherwise) and reflection.

    `register` adds the servicers and returns their full service names, taken from descriptors.
    Names in `unlisted` are served and health-checked but left out of reflection: on a public port, reflection
    reaches users (Envoy proxies it), so it lists only the public API.
    Port 0 binds a free port; the real one is returned.
    """
    # Tracing outermost, so a request the guard rejects still has its span.
    interceptors = [*server_interceptors(), DecodeGuard()]
    server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
    service_names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in [*service_names, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    listed = [name for name in service_names if name not in unlisted]
    reflection.enable_server_reflection(
        [*listed, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    bound_port = server.add_insecure_port(f"{host}:{port}")
    return server, bound_port, health_servicer


async def set_serving(health_servicer: health.aio.HealthServicer, names: Iterable[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in [*names, ""]:
        await health_servicer.set(name, status)


def _retry_service_config(idempotent_methods: Iterable[tuple[str, str]]) -> str:
    """Channel-level retries for connection failures on idempotent RPCs only; Temporal owns generation retries."""
    names = [{"service": service, "method": method} for service, method in idempotent_methods]
    if not names:
        return json.dumps({})
    policy = {
        "maxAttempts": 4,
        "initialBackoff": "0.05s",
        "maxBackoff": "0.5s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}]})


def idempotent_methods(*service_descriptors: Any) -> list[tuple[str, str]]:
    """Methods whose proto marks them NO_SIDE_EFFECTS or IDEMPOTENT, read from descriptors rather than typed by hand."""
    methods = []
    for service in service_descriptors:
        for method in service.methods:
            if method.GetOptions().idempotency_level != 0:
                methods.append((service.full_name, method.name))
    return methods


def make_channel(target: str, *service_descriptors: Any) -> grpc.aio.Channel:
    options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _retry_service_config(idempotent_methods(*service_descriptors))),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]
    return grpc.aio.insecure_channel(target, options=options, interceptors=client_interceptors())


async def wait_until_serving(
    target: str, timeout_s: float, service: str = "", exited: Callable[[], str | None] | None = None
) -> None:
    """Poll grpc.health.v1 until SERVING or the timeout passes; used by launchers, tests and benchmarks.

    `exited` returns why the process behind `target` is gone, or None while it runs, so a crash fails fast.
    """
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            reason = exited() if exited else None
            if reason:
                raise RuntimeError(reason)
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last_error = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as error:
                last_error = error.code().name
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{target} not SERVING after {timeout_s}s (last: {last_error})")


def activity_timeout_s() -> float | None:
    """Inside an activity: the gRPC deadline follows the activity's own, so a call never outlives the activity."""
    timeout = activity.info().start_to_close_timeout
    return None if timeout is None else max(timeout.total_seconds(), 1.0)
