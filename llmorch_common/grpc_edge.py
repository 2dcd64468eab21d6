"""The transport edge: every handler leaves through it (never UNKNOWN), server plumbing (health, reflection) and
channels."""

import asyncio
import contextlib
import contextvars
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

from llmorch_common.errors import PlatformError, from_exception, to_status

log = logging.getLogger(__name__)

RPC_REQUESTS = Counter("llmorch_rpc_requests_total", "RPCs handled, by method and status code", ["method", "code"])
RPC_LATENCY = Histogram("llmorch_rpc_duration_seconds", "RPC handling time, by method", ["method"])

Handler = TypeVar("Handler", bound=Callable[..., Any])
Wrap = Callable[[Any], Any]
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# Open on every server: Kubernetes probes carry no credentials, and reflection shows only the schema.
OPEN_SERVICES = (HEALTH_SERVICE, reflection.SERVICE_NAME, "grpc.reflection.v1.ServerReflection")


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


def _rebuilt(handler: grpc.RpcMethodHandler, wrap_unary: Wrap, wrap_stream: Wrap, deserialize: Any) -> Any:
    """`handler` with its behavior wrapped (`wrap_unary` when the request is one message, else `wrap_stream`)."""
    serialize = handler.response_serializer
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap_unary(handler.unary_unary), deserialize, serialize)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(wrap_unary(handler.unary_stream), deserialize, serialize)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(wrap_stream(handler.stream_unary), deserialize, serialize)
    return grpc.stream_stream_rpc_method_handler(wrap_stream(handler.stream_stream), deserialize, serialize)


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
        deserialize = _tolerant(handler.request_deserializer)
        return _rebuilt(handler, _guard_unary_request, _guard_request_stream, deserialize)


def _preceded(behavior: Any, admit: Callable[[grpc.aio.ServicerContext], Awaitable[None]]) -> Any:
    """`behavior`, with `admit` awaited first in the same task (so what it sets in a ContextVar, the handler sees)."""
    if inspect.iscoroutinefunction(behavior):

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admit(context)
            return await behavior(request, context)

        return call

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await admit(context)
        async for response in behavior(request, context):
            yield response

    return stream


def bearer(context: grpc.aio.ServicerContext) -> str | None:
    """The call's `authorization` metadata, if any."""
    return next((value for key, value in context.invocation_metadata() or () if key == "authorization"), None)


class AuthGate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Every method of a service outside `open_services` is admitted only if `authenticate` accepts the call's
    `authorization` metadata; what it returns is in `caller` (if given) while the handler runs, and its refusal (a
    PlatformError, e.g. UNAUTHENTICATED) is the call's status. Put it before DecodeGuard: a caller without
    credentials learns nothing, not even whether its bytes decode."""

    def __init__(
        self,
        authenticate: Callable[[str | None], Awaitable[Any]],
        caller: contextvars.ContextVar[Any] | None = None,
        open_services: Collection[str] = OPEN_SERVICES,
    ) -> None:
        self._authenticate = authenticate
        self._caller = caller
        self._open = frozenset(open_services)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.strip("/").split("/")[0] in self._open:
            return handler

        async def admit(context: grpc.aio.ServicerContext) -> None:
            try:
                admitted = await self._authenticate(bearer(context))
                if self._caller is not None:
                    self._caller.set(admitted)
            except PlatformError as error:
                RPC_REQUESTS.labels(details.method, error.code).inc()
                await context.abort_with_status(to_status(error))

        def wrap(behavior: Any) -> Any:
            return _preceded(behavior, admit)

        return _rebuilt(handler, wrap, wrap, handler.request_deserializer)


async def create_server(
    register: Callable[[grpc.aio.Server], Iterable[str]],
    port: int,
    host: str = "0.0.0.0",
    gate: AuthGate | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Build a server with health (NOT_SERVING until the caller says otherwise) and reflection.

    `register` adds the servicers and returns their full service names, taken from descriptors; reflection lists
    exactly those. With a `gate`, every call but health and reflection must carry credentials it accepts.
    Port 0 binds a free port; the real one is returned.
    """
    interceptors = [DecodeGuard()] if gate is None else [gate, DecodeGuard()]
    server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])
    service_names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in [*service_names, ""]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection([*service_names, HEALTH_SERVICE, reflection.SERVICE_NAME], server)
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


class _Authorized:
    """Adds `authorization: Bearer <token>` to a call's metadata: an API key, or the registration token."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._header)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files each interceptor under the first call type it implements, so each type needs its own class.
class _AuthorizedUnaryUnary(_Authorized, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AuthorizedUnaryStream(_Authorized, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AuthorizedStreamUnary(_Authorized, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _AuthorizedStreamStream(_Authorized, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def authorized(token: str) -> list[Any]:
    """Client interceptors that send `token` with every call of a channel."""
    kinds = (_AuthorizedUnaryUnary, _AuthorizedUnaryStream, _AuthorizedStreamUnary, _AuthorizedStreamStream)
    return [kind(token) for kind in kinds]


def make_channel(
    target: str,
    *service_descriptors: Any,
    token: str | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.aio.Channel:
    """A channel with retries for the descriptors' idempotent methods; with `token`, every call carries it; TLS
    when `credentials` are given (Envoy's)."""
    interceptors = authorized(token) if token else None
    options = [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", _retry_service_config(idempotent_methods(*service_descriptors))),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)


async def wait_until_serving(
    target: str,
    timeout_s: float,
    service: str = "",
    exited: Callable[[], str | None] | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Poll grpc.health.v1 until SERVING or the timeout passes; used by launchers, tests and benchmarks.

    `exited` returns why the process behind `target` is gone, or None while it runs, so a crash fails fast.
    `credentials` check a TLS listener (Envoy's) the way its clients reach it.
    """
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    opened = grpc.aio.secure_channel(target, credentials) if credentials else grpc.aio.insecure_channel(target)
    async with opened as channel:
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
