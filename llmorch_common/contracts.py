"""Inputs and outputs of workflows and activities: frozen dataclasses, so fields can be added without breaking runs."""

from dataclasses import dataclass, field

GENERATE_ACTIVITY = "generate"
EMBED_ACTIVITY = "embed"
STREAM_SIGNAL = "append_delta"
# finish_reason words in results (strings, so recorded histories stay as they are); the wire enum is FinishReason.
STOP = "stop"
LENGTH = "length"
CANCELLED = "cancelled"


@dataclass(frozen=True)
class ChatTurn:
    role: str
    content: str


@dataclass(frozen=True)
class Sampling:
    """Resolved sampling parameters: defaults already applied at the API edge."""

    max_tokens: int = 128
    temperature: float = 0.7
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Small models loop without it; 1.1 is llama.cpp's own command-line default.
    repeat_penalty: float = 1.1


@dataclass(frozen=True)
class GenerateInput:
    request_id: str
    messages: tuple[ChatTurn, ...]
    prompt: str
    sampling: Sampling
    # When set, the activity streams deltas to this workflow as signals so the API can relay them.
    stream_to_workflow_id: str = ""
    attempt: int = 1


@dataclass(frozen=True)
class GenerateOutput:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_ms: float
    generation_ms: float
    model_id: str
    queue_wait_ms: float = 0.0


@dataclass(frozen=True)
class StreamDelta:
    """A batch of text produced by one generation attempt, signalled to the workflow."""

    attempt: int
    text: str


@dataclass(frozen=True)
class RagRequest:
    collection: str
    top_k: int
    embedding_task_queue: str


@dataclass(frozen=True)
class RetrieveInput:
    collection: str
    vector: list[float]
    top_k: int


@dataclass(frozen=True)
class DispatchPolicy:
    """Timeouts and bounds of one request; the API fills them from its settings, tests shorten them."""

    generate_timeout_s: float = 300.0
    heartbeat_timeout_s: float = 5.0
    # A model whose queue does not start the generation within this bound counts as saturated: fall back.
    saturation_timeout_s: float = 30.0
    generate_attempts: int = 2
    max_selections: int = 4


@dataclass(frozen=True)
class InferenceInput:
    request_id: str
    messages: tuple[ChatTurn, ...]
    prompt: str
    sampling: Sampling
    model_id: str = ""
    rag: RagRequest | None = None
    stream: bool = False
    # Digest of the request as the client sent it; a reused request_id must match it.
    request_digest: str = ""
    policy: DispatchPolicy = field(default_factory=DispatchPolicy)


@dataclass(frozen=True)
class FallbackRecord:
    model_id: str
    reason: str


@dataclass(frozen=True)
class CitationRecord:
    chunk_id: str
    source: str
    score: float
    text: str


@dataclass(frozen=True)
class InferenceResult:
    request_id: str
    text: str
    finish_reason: str
    model_id: str
    selection_reason: str
    prompt_tokens: int
    completion_tokens: int
    queue_wait_ms: float
    time_to_first_token_ms: float
    generation_ms: float
    retrieval_ms: float
    total_ms: float
    workflow_id: str
    run_id: str
    fallbacks: tuple[FallbackRecord, ...] = ()
    citations: tuple[CitationRecord, ...] = ()


@dataclass(frozen=True)
class SelectModelInput:
    requested_model_id: str
    excluded: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelChoice:
    model_id: str
    task_queue: str
    reason: str
    context_limit: int
    # True when every candidate was full and the request queues on the best one (backpressure).
    queued: bool = False


@dataclass(frozen=True)
class StreamCursor:
    """How much of the current attempt's text a streaming client has seen."""

    attempt: int
    offset: int


@dataclass(frozen=True)
class StreamSnapshot:
    """Text the client has not seen yet; a new attempt (after a fallback) restarts the text from empty."""

    attempt: int
    model_id: str
    reason: str
    text: str
    offset: int
    done: bool
