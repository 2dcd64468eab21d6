"""Inputs and outputs of the inference workflow and its control-plane activities.

Frozen dataclasses, so a field can be added without breaking runs in flight."""

from dataclasses import dataclass

from llmorch_common.contracts import ChatTurn, Sampling
from orchestrator_svc.retrieval.activities import CitationRecord


@dataclass(frozen=True)
class RagRequest:
    collection: str
    top_k: int
    embedding_task_queue: str
    # A RetrievalMode value; runs started before modes existed searched densely.
    mode: str = "dense"


@dataclass(frozen=True)
class DispatchPolicy:
    """Timeouts and bounds of one request, from the API's settings (service.dispatch_policy)."""

    generate_timeout_s: float
    heartbeat_timeout_s: float
    # A model whose queue does not start the generation within this bound counts as saturated: fall back.
    saturation_timeout_s: float
    generate_attempts: int
    max_selections: int


@dataclass(frozen=True)
class ModelChoice:
    model_id: str
    task_queue: str
    reason: str
    context_limit: int
    # True when every candidate was full and the request queues on the best one (backpressure).
    queued: bool = False
    model_digest: str = ""


@dataclass(frozen=True)
class InferenceInput:
    request_id: str
    messages: tuple[ChatTurn, ...]
    prompt: str
    sampling: Sampling
    policy: DispatchPolicy
    model_id: str = ""
    rag: RagRequest | None = None
    stream: bool = False
    # Digest of the request as the client sent it; a reused request_id must match it.
    request_digest: str = ""
    # After a fallback: "continue" the text generated so far on the next model (when it fits) or "restart".
    on_fallback: str = "continue"
    # Whose request it is (from the caller's API key) and its dispatch class; empty in histories recorded before.
    tenant: str = ""
    priority_class: str = ""
    # > 0: a deterministic request (temperature 0 or a seed) with the cache on; its answer is kept this long.
    cache_ttl_s: float = 0.0
    # The OpenTelemetry trace of the call that started the run (empty without tracing), returned in provenance.
    trace_id: str = ""
    # The API's selection for the first attempt, made in the request's admission from the same registry, so a
    # request without retrieval needs no select_model activity; None (retrieval, or runs from before): the
    # workflow selects. Fallbacks always select in the workflow.
    first_choice: ModelChoice | None = None


@dataclass(frozen=True)
class FallbackRecord:
    model_id: str
    reason: str


CONTINUE = "continue"
RESTART = "restart"


@dataclass(frozen=True)
class PartRecord:
    """One model's share of the answer (provenance): where it resumed, what it carried and generated."""

    model_id: str
    selection: int
    attempts: int = 0
    resumed_at_tokens: int = 0
    generated_tokens: int = 0
    carried_chars: int = 0
    chars: int = 0
    outcome: str = "completed"


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
    parts: tuple[PartRecord, ...] = ()
    priority_class: str = ""  # the class it was dispatched in
    cache: str = ""  # "hit", "miss", or "" when not cached (Provenance.cache)
    trace_id: str = ""


@dataclass(frozen=True)
class StreamCursor:
    """How much of the answer a streaming client has seen: the selection it last heard of, the text's epoch (it
    changes when text must be discarded; -1 for a client that has seen nothing) and its length."""

    attempt: int
    offset: int
    epoch: int = 0


@dataclass(frozen=True)
class StreamSnapshot:
    """Text the client has not seen yet. reset: discard what was seen; text then starts the answer over."""

    attempt: int
    model_id: str
    reason: str
    text: str
    offset: int
    done: bool
    epoch: int = 0
    reset: bool = False
    reset_reason: str = ""
