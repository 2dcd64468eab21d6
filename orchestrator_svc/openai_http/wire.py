"""OpenAI's JSON ↔ the platform's request and result: request bodies, responses, stream chunks and error bodies."""

import base64
import math
import struct
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Literal, TypeVar

from llmorch.v1 import orchestrator_pb2, types_pb2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmorch_common.contracts import LENGTH
from llmorch_common.errors import FieldViolation, PlatformError, invalid_argument
from orchestrator_svc.inference.contracts import InferenceResult

AUTO_MODEL = "auto"  # `model: auto`: the router chooses, as a gRPC request without model_id
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
OPENAI_OBJECT = "llmorch"  # the extension field that carries provenance in every response

# Platform status → HTTP status and OpenAI's error `type`.
HTTP_STATUS = {
    "INVALID_ARGUMENT": (400, "invalid_request_error"),
    "OUT_OF_RANGE": (400, "invalid_request_error"),
    "FAILED_PRECONDITION": (400, "invalid_request_error"),
    "UNAUTHENTICATED": (401, "authentication_error"),
    "PERMISSION_DENIED": (403, "permission_error"),
    "NOT_FOUND": (404, "not_found_error"),
    "ALREADY_EXISTS": (409, "conflict_error"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error"),
    "CANCELLED": (499, "cancelled_error"),
    "UNAVAILABLE": (503, "service_unavailable_error"),
    "DEADLINE_EXCEEDED": (504, "timeout_error"),
}


Body = TypeVar("Body", bound=BaseModel)


class RagOption(BaseModel):
    """The extension `rag: {collection, top_k}` (SDK users send it with extra_body)."""

    model_config = ConfigDict(extra="forbid")
    collection: str = Field(min_length=1)
    top_k: int = Field(0, ge=0, le=INT32_MAX)


class StreamOptions(BaseModel):
    include_usage: bool = False


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: str
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class GenerationBody(BaseModel):
    """What chat and completions share. Unknown fields are ignored, as OpenAI's API ignores them."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=-INT32_MAX, le=INT32_MAX)
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-INT64_MAX, le=INT64_MAX)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    logprobs: bool | int | None = None
    rag: RagOption | None = None

    def unsupported(self) -> list[str]:
        """Parameters the platform does not offer, with values that would change the answer."""
        names = []
        if self.n != 1:
            names.append("n")
        if self.logprobs:
            names.append("logprobs")
        return names


class ChatBody(GenerationBody):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=-INT32_MAX, le=INT32_MAX)
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    top_logprobs: int | None = None

    def unsupported(self) -> list[str]:
        names = super().unsupported()
        names += [name for name in ("tools", "functions") if getattr(self, name)]
        if self.tool_choice not in (None, "none"):
            names.append("tool_choice")
        if self.function_call not in (None, "none"):
            names.append("function_call")
        if self.top_logprobs:
            names.append("top_logprobs")
        return names


class CompletionBody(GenerationBody):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def unsupported(self) -> list[str]:
        names = super().unsupported()
        if self.echo:
            names.append("echo")
        if self.suffix:
            names.append("suffix")
        if self.best_of not in (None, 1):
            names.append("best_of")
        return names


class EmbeddingBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


def parse_body(kind: type[Body], raw: bytes) -> Body:
    """A request body, or INVALID_ARGUMENT naming each bad parameter (its OpenAI name)."""
    try:
        return kind.model_validate_json(raw)
    except ValidationError as error:
        violations = [
            FieldViolation(".".join(str(part) for part in issue["loc"]) or "body", issue["msg"])
            for issue in error.errors()
        ]
        raise invalid_argument(violations) from None


def reject_unsupported(names: Sequence[str]) -> None:
    if names:
        raise invalid_argument([FieldViolation(name, "is not supported by this platform") for name in names])


def _sampling(body: GenerationBody, max_tokens: int | None) -> types_pb2.SamplingParams:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    return types_pb2.SamplingParams(
        max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, stop=stop, seed=body.seed
    )


def _generate_request(
    body: GenerationBody, request_id: str, max_tokens: int | None
) -> orchestrator_pb2.GenerateRequest:
    request = orchestrator_pb2.GenerateRequest(
        request_id=request_id,
        sampling=_sampling(body, max_tokens),
        model_id="" if body.model == AUTO_MODEL else body.model,
    )
    if body.rag:
        request.rag.CopyFrom(types_pb2.RagOptions(collection=body.rag.collection, top_k=body.rag.top_k))
    return request


# OpenAI's `developer` role is its newer name for `system`.
ROLE_ALIASES = {"developer": "system"}


def chat_request(body: ChatBody, request_id: str) -> orchestrator_pb2.GenerateRequest:
    """The public GenerateRequest an OpenAI chat body means; the gRPC API's own checks then apply to it."""
    request = _generate_request(body, request_id, body.max_completion_tokens or body.max_tokens)
    request.messages.extend(
        types_pb2.ChatMessage(role=ROLE_ALIASES.get(m.role, m.role), content=m.text()) for m in body.messages
    )
    return request


def completion_request(body: CompletionBody, request_id: str) -> orchestrator_pb2.GenerateRequest:
    if isinstance(body.prompt, list) and len(body.prompt) != 1:
        raise invalid_argument([FieldViolation("prompt", "exactly one prompt per request (a batch is n requests)")])
    request = _generate_request(body, request_id, body.max_tokens)
    request.prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
    return request


def openai_param(field: str, chat: bool) -> str:
    """A platform field path as the OpenAI parameter the client sent (sampling.top_p → top_p)."""
    if field == "request_id":
        return "Idempotency-Key"
    if field.startswith("sampling."):
        return field.removeprefix("sampling.")
    if field.startswith("texts"):
        return "input" + field.removeprefix("texts")
    if field == "prompt" and chat:
        return "messages"
    return field


def error_body(error: PlatformError, chat: bool = True) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, OpenAI error JSON, headers) of a platform error."""
    status, kind = HTTP_STATUS.get(error.code, (500, "server_error"))
    params = [openai_param(v.field, chat) for v in error.violations]
    message = error.message
    for violation, param in zip(error.violations, params, strict=True):
        message = message.replace(f"{violation.field}:", f"{param}:")
    headers = {}
    if error.retry_after_s is not None:
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after_s)))
    body = {"error": {"message": message, "type": kind, "param": params[0] if params else None, "code": error.code}}
    return status, body, headers


def finish_reason(result: InferenceResult) -> str:
    return "length" if result.finish_reason == LENGTH else "stop"


def usage(result: InferenceResult) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def provenance(result: InferenceResult) -> dict[str, Any]:
    """Everything the gRPC Provenance says, under the `llmorch` extension field."""
    fields = asdict(result)
    fields.pop("text")
    return fields


def provenance_headers(result: InferenceResult) -> dict[str, str]:
    return {
        "x-llmorch-cache": result.cache,
        "x-llmorch-request-id": result.request_id,
        "x-llmorch-workflow-id": result.workflow_id,
        "x-llmorch-model": result.model_id,
        "x-llmorch-selection-reason": _header_text(result.selection_reason),
        "x-llmorch-fallbacks": ",".join(f.model_id for f in result.fallbacks),
        "x-llmorch-citations": ",".join(c.chunk_id for c in result.citations),
    }


def _header_text(text: str) -> str:
    """Header values are Latin-1 on one line."""
    return " ".join(text.encode("ascii", "replace").decode().split())


def chat_response(result: InferenceResult, created: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{result.request_id}",
        "object": "chat.completion",
        "created": created,
        "model": result.model_id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": finish_reason(result),
            }
        ],
        "usage": usage(result),
        OPENAI_OBJECT: provenance(result),
    }


def completion_response(result: InferenceResult, created: int) -> dict[str, Any]:
    return {
        "id": f"cmpl-{result.request_id}",
        "object": "text_completion",
        "created": created,
        "model": result.model_id,
        "choices": [{"index": 0, "text": result.text, "logprobs": None, "finish_reason": finish_reason(result)}],
        "usage": usage(result),
        OPENAI_OBJECT: provenance(result),
    }


def embedding_values(vector: list[float], encoding: str) -> list[float] | str:
    """base64 is little-endian float32, as OpenAI sends it (the Python SDK asks for it by default)."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def now() -> int:
    return int(time.time())
