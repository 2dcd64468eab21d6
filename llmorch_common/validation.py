"""Input rules for generation and embedding requests, shared by the public API and the internal services alike."""

import re
from collections.abc import Sequence

from llmorch.v1 import types_pb2

from llmorch_common.contracts import ChatTurn, Sampling
from llmorch_common.errors import FieldViolation, invalid_argument

MAX_PROMPT_CHARS = 100_000
MAX_MESSAGES = 256
MAX_TOKENS_LIMIT = 4096
MAX_STOP_STRINGS = 8
MAX_STOP_CHARS = 64
ROLES = ("system", "user", "assistant")
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
DEFAULT_SAMPLING = Sampling()
# The public Embed's documented limits; EmbeddingService defaults to the same and may be configured lower.
MAX_EMBED_TEXTS = 256
MAX_EMBED_TEXT_CHARS = 20_000


def generation_violations(
    messages: list[types_pb2.ChatMessage], prompt: str, sampling: types_pb2.SamplingParams, prefix: str = ""
) -> list[FieldViolation]:
    """Every problem at once, so a client fixes its request in one round trip."""
    violations: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        violations.append(FieldViolation(prefix + field, description))

    if not messages and not prompt.strip():
        bad("prompt", "either prompt or messages must be set and non-empty")
    if messages and prompt:
        bad("prompt", "set either prompt or messages, not both")
    if len(prompt) > MAX_PROMPT_CHARS:
        bad("prompt", f"at most {MAX_PROMPT_CHARS} characters")
    if len(messages) > MAX_MESSAGES:
        bad("messages", f"at most {MAX_MESSAGES} messages")
    for index, message in enumerate(messages):
        if message.role not in ROLES:
            bad(f"messages[{index}].role", f"must be one of {', '.join(ROLES)}")
        if not message.content.strip():
            bad(f"messages[{index}].content", "must not be empty")
    if sum(len(m.content) for m in messages) > MAX_PROMPT_CHARS:
        bad("messages", f"at most {MAX_PROMPT_CHARS} characters in all")
    violations.extend(_sampling_violations(sampling, prefix + "sampling."))
    return violations


def _sampling_violations(sampling: types_pb2.SamplingParams, prefix: str) -> list[FieldViolation]:
    violations = []
    if sampling.HasField("max_tokens") and not 1 <= sampling.max_tokens <= MAX_TOKENS_LIMIT:
        violations.append(FieldViolation(prefix + "max_tokens", f"must be in [1, {MAX_TOKENS_LIMIT}]"))
    if sampling.HasField("temperature") and not 0.0 <= sampling.temperature <= 2.0:
        violations.append(FieldViolation(prefix + "temperature", "must be in [0, 2]"))
    if sampling.HasField("top_p") and not 0.0 < sampling.top_p <= 1.0:
        violations.append(FieldViolation(prefix + "top_p", "must be in (0, 1]"))
    if sampling.HasField("repeat_penalty") and not 1.0 <= sampling.repeat_penalty <= 2.0:
        violations.append(FieldViolation(prefix + "repeat_penalty", "must be in [1, 2]"))
    if len(sampling.stop) > MAX_STOP_STRINGS:
        violations.append(FieldViolation(prefix + "stop", f"at most {MAX_STOP_STRINGS} stop strings"))
    for index, stop in enumerate(sampling.stop):
        if not stop or len(stop) > MAX_STOP_CHARS:
            violations.append(FieldViolation(f"{prefix}stop[{index}]", f"must be 1 to {MAX_STOP_CHARS} characters"))
    return violations


def embed_violations(
    texts: Sequence[str], max_texts: int = MAX_EMBED_TEXTS, max_chars: int = MAX_EMBED_TEXT_CHARS
) -> list[FieldViolation]:
    """Name every bad text, so a client can fix the whole batch at once; empty strings are allowed."""
    violations = []
    if not texts:
        violations.append(FieldViolation("texts", "must hold at least one text"))
    elif len(texts) > max_texts:
        violations.append(FieldViolation("texts", f"holds {len(texts)} texts; at most {max_texts} are allowed"))
    for index, text in enumerate(texts):
        if len(text) > max_chars:
            violations.append(FieldViolation(f"texts[{index}]", f"is {len(text)} characters; at most {max_chars}"))
    return violations


def check_generation(
    messages: list[types_pb2.ChatMessage], prompt: str, sampling: types_pb2.SamplingParams, prefix: str = ""
) -> None:
    violations = generation_violations(messages, prompt, sampling, prefix)
    if violations:
        raise invalid_argument(violations)


def resolve_sampling(sampling: types_pb2.SamplingParams) -> Sampling:
    """Apply defaults to unset fields; call only after validation."""
    return Sampling(
        max_tokens=sampling.max_tokens if sampling.HasField("max_tokens") else DEFAULT_SAMPLING.max_tokens,
        temperature=sampling.temperature if sampling.HasField("temperature") else DEFAULT_SAMPLING.temperature,
        top_p=sampling.top_p if sampling.HasField("top_p") else DEFAULT_SAMPLING.top_p,
        stop=tuple(sampling.stop),
        seed=sampling.seed if sampling.HasField("seed") else None,
        repeat_penalty=(
            sampling.repeat_penalty if sampling.HasField("repeat_penalty") else DEFAULT_SAMPLING.repeat_penalty
        ),
    )


def to_turns(messages: list[types_pb2.ChatMessage]) -> tuple[ChatTurn, ...]:
    return tuple(ChatTurn(m.role, m.content) for m in messages)


def sampling_to_proto(sampling: Sampling) -> types_pb2.SamplingParams:
    return types_pb2.SamplingParams(
        max_tokens=sampling.max_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        stop=list(sampling.stop),
        seed=sampling.seed,
        repeat_penalty=sampling.repeat_penalty,
    )


def turns_to_proto(turns: tuple[ChatTurn, ...]) -> list[types_pb2.ChatMessage]:
    return [types_pb2.ChatMessage(role=t.role, content=t.content) for t in turns]
