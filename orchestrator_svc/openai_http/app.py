"""The OpenAI-compatible routes: each one checks the key, converts the body and calls InferenceService, the layer
the gRPC servicer calls, so an HTTP request is the same durable InferenceWorkflow as a gRPC one."""

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

from prometheus_client import Counter, Histogram
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from llmorch_common.errors import FieldViolation, PlatformError, from_exception, invalid_argument, not_found
from orchestrator_svc.identity.keys import Principal
from orchestrator_svc.inference.requests import check_embed, request_from_proto
from orchestrator_svc.inference.service import (
    Completed,
    Delta,
    InferenceRequest,
    InferenceService,
    Reset,
    Selected,
    StreamEvent,
    workflow_id,
)
from orchestrator_svc.openai_http import wire
from orchestrator_svc.registry.records import ModelType
from orchestrator_svc.registry.service import Registry

log = logging.getLogger(__name__)

HTTP_REQUESTS = Counter(
    "llmorch_http_requests_total", "OpenAI-compatible HTTP requests, by route and HTTP status", ["route", "status"]
)
HTTP_LATENCY = Histogram(
    "llmorch_http_duration_seconds", "HTTP handling time to the response head, by route", ["route"]
)
IDEMPOTENCY_HEADER = "idempotency-key"


class KeyCheck(Protocol):
    """The key check the gRPC surface uses (identity.KeyChecker): the caller, or UNAUTHENTICATED."""

    async def authenticate(self, authorization: str | None) -> Principal: ...


Handler = Callable[[Request, Principal], Awaitable[Response]]


def _error_response(error: PlatformError, chat: bool = True) -> JSONResponse:
    status, body, headers = wire.error_body(error, chat)
    return JSONResponse(body, status_code=status, headers=headers)


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class OpenAIFacade:
    def __init__(self, service: InferenceService, registry: Registry, keys: KeyCheck) -> None:
        self._service = service
        self._registry = registry
        self._keys = keys

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self._edge("chat", self.chat), methods=["POST"]),
            Route("/v1/completions", self._edge("completions", self.completions), methods=["POST"]),
            Route("/v1/embeddings", self._edge("embeddings", self.embeddings), methods=["POST"]),
            Route("/v1/models", self._edge("models", self.models), methods=["GET"]),
            Route("/v1/models/{model_id:path}", self._edge("model", self.model), methods=["GET"]),
        ]

    def _edge(self, route: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """One key check at the start of every request, and every failure as OpenAI's error JSON (never a bare
        500)."""

        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            try:
                caller = await self._keys.authenticate(request.headers.get("authorization"))
                response = await handler(request, caller)
            except Exception as error:  # the edge: anything left becomes an OpenAI error
                response = _error_response(from_exception(error), chat=route == "chat")
            HTTP_REQUESTS.labels(route, str(response.status_code)).inc()
            HTTP_LATENCY.labels(route).observe(time.perf_counter() - started)
            return response

        return endpoint

    async def chat(self, request: Request, caller: Principal) -> Response:
        body = wire.parse_body(wire.ChatBody, await request.body())
        wire.reject_unsupported(body.unsupported())
        inference = request_from_proto(wire.chat_request(body, _request_id(request)), caller)
        if body.stream:
            return await self._stream(inference, body, chat=True)
        with self._service.admitted():
            result = await self._service.generate(inference)
        return JSONResponse(wire.chat_response(result, wire.now()), headers=wire.provenance_headers(result))

    async def completions(self, request: Request, caller: Principal) -> Response:
        body = wire.parse_body(wire.CompletionBody, await request.body())
        wire.reject_unsupported(body.unsupported())
        inference = request_from_proto(wire.completion_request(body, _request_id(request)), caller)
        if body.stream:
            return await self._stream(inference, body, chat=False)
        with self._service.admitted():
            result = await self._service.generate(inference)
        return JSONResponse(wire.completion_response(result, wire.now()), headers=wire.provenance_headers(result))

    async def _stream(self, inference: InferenceRequest, body: wire.GenerationBody, chat: bool) -> Response:
        """Server-sent events as OpenAI sends them. The first event is awaited before the response starts, so
        admission, an unknown model or a reused Idempotency-Key still get their HTTP status."""
        admission = contextlib.ExitStack()
        admission.enter_context(self._service.admitted())
        events = self._service.stream(inference)
        try:
            first = await anext(events)
        except BaseException:
            await events.aclose()
            admission.close()
            raise
        chunks = _Chunks(
            inference.request_id, chat, body.stream_options is not None and body.stream_options.include_usage
        )
        headers = {
            "x-llmorch-request-id": inference.request_id,
            "x-llmorch-workflow-id": workflow_id(inference.tenant, inference.request_id),
            "cache-control": "no-cache",
        }
        first_chunks = chunks.event(first)  # a Selected names the model before the head goes out
        if isinstance(first, Selected):
            headers["x-llmorch-model"] = first.model_id

        async def stream() -> AsyncIterator[bytes]:
            with admission:
                async with contextlib.aclosing(events):
                    yield chunks.head()
                    try:
                        for chunk in first_chunks:
                            yield chunk
                        async for event in events:
                            for chunk in chunks.event(event):
                                yield chunk
                    except Exception as error:  # after the head, an error travels as an SSE event (the SDK raises it)
                        _, error_json, _ = wire.error_body(from_exception(error), chat)
                        yield _sse(error_json)
                    yield _sse("[DONE]")

        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def embeddings(self, request: Request, caller: Principal) -> Response:
        body = wire.parse_body(wire.EmbeddingBody, await request.body())
        if body.dimensions is not None:
            raise invalid_argument([FieldViolation("dimensions", "is not supported: the model's dimension is fixed")])
        texts = [body.input] if isinstance(body.input, str) else body.input
        check_embed(texts)
        known = {m.metadata.model_id for m in self._registry.models(ModelType.EMBEDDING)}
        if body.model != wire.AUTO_MODEL and body.model not in known:
            raise not_found(f"no embedding model {body.model!r} is registered; known: {', '.join(sorted(known))}")
        embedded = await self._service.embed(texts)
        total = sum(embedded.token_counts)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": wire.embedding_values(v, body.encoding_format)}
                    for i, v in enumerate(embedded.vectors)
                ],
                "model": embedded.model_id,
                "usage": {"prompt_tokens": total, "total_tokens": total},
            }
        )

    async def models(self, request: Request, caller: Principal) -> Response:
        live = await self._registry.live_models()
        return JSONResponse({"object": "list", "data": [_model(m.metadata.model_id) for m in live]})

    async def model(self, request: Request, caller: Principal) -> Response:
        model_id = request.path_params["model_id"]
        if model_id not in self._registry.model_ids():
            raise not_found(f"no model {model_id!r} is registered")
        return JSONResponse(_model(model_id))


def _model(model_id: str) -> dict[str, Any]:
    # The registry keeps no creation time of a model; 0 says "unknown" in the integer the schema requires.
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "llmorch"}


def _request_id(request: Request) -> str:
    """The Idempotency-Key is the request id, so a retried call reattaches to the same workflow (checked as one)."""
    return request.headers.get(IDEMPOTENCY_HEADER, "")


class _Chunks:
    """The stream's chunks: OpenAI's `chat.completion.chunk` (or `text_completion`) objects."""

    def __init__(self, request_id: str, chat: bool, include_usage: bool) -> None:
        self._chat = chat
        self._include_usage = include_usage
        self._id = f"{'chatcmpl' if chat else 'cmpl'}-{request_id}"
        self._created = wire.now()
        self._model = ""

    def _chunk(self, choice: dict[str, Any] | None, **extra: Any) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk" if self._chat else "text_completion",
            "created": self._created,
            "model": self._model,
            "choices": [choice] if choice else [],
            **extra,
        }
        if self._include_usage:
            chunk.setdefault("usage", None)
        return _sse(chunk)

    def _choice(self, text: str | None, finish: str | None = None, role: bool = False) -> dict[str, Any]:
        if not self._chat:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def head(self) -> bytes:
        return self._chunk(self._choice("", role=True))

    def event(self, event: StreamEvent) -> list[bytes]:
        if isinstance(event, Selected):
            self._model = event.model_id
            return []
        if isinstance(event, Delta):
            return [self._chunk(self._choice(event.text))]
        if isinstance(event, Reset):
            # OpenAI streams cannot take text back: the extension field says to discard what came before.
            return [self._chunk(self._choice(None), **{wire.OPENAI_OBJECT: {"reset": event.reason}})]
        assert isinstance(event, Completed)
        result = event.result
        self._model = result.model_id
        last = [
            self._chunk(self._choice(None, wire.finish_reason(result)), **{wire.OPENAI_OBJECT: wire.provenance(result)})
        ]
        if self._include_usage:
            last.append(self._chunk(None, usage=wire.usage(result)))
        return last


def create_app(facade: OpenAIFacade) -> Starlette:
    return Starlette(routes=facade.routes())
