"""Contracts between services: the activities that model and embedding containers serve for the orchestrator.

Frozen dataclasses, so a field can be added without breaking runs in flight."""

from dataclasses import dataclass

GENERATE_ACTIVITY = "generate"
EMBED_ACTIVITY = "embed"
STREAM_SIGNAL = "append_delta"
# The workflow's record of what a selection streamed: a retried generate activity resumes from it.
PROGRESS_QUERY = "generation_progress"
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
    # Another model's partial answer, to continue after a fallback; the output's text does not repeat it.
    assistant_prefix: str = ""


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
    # completion_tokens and text cover the whole generation on this model; the last activity attempt resumed
    # after resumed_tokens of them (recorded by the workflow or heartbeated) and generated the rest itself.
    resumed_tokens: int = 0
    activity_attempts: int = 1


@dataclass(frozen=True)
class StreamDelta:
    """A batch of text produced by one generation attempt, signalled to the workflow."""

    attempt: int
    text: str
    # The tokens text decodes from, and the index of the first of them in this selection's generation: the
    # workflow appends a delta only where its record ends, so a retry's or a late delta never doubles text.
    # start -1 (workers from before resumption) appends unchecked.
    token_ids: tuple[int, ...] = ()
    start: int = -1


@dataclass(frozen=True)
class GenerationProgress:
    """What one selection has streamed so far: its tokens and their text. A retry resumes from here."""

    attempt: int
    token_ids: tuple[int, ...] = ()
    text: str = ""


@dataclass(frozen=True)
class EmbedInput:
    texts: tuple[str, ...]


@dataclass(frozen=True)
class EmbedOutput:
    """One unit-norm vector and one token count (after truncation) per input text, in order."""

    vectors: list[list[float]]
    token_counts: list[int]
