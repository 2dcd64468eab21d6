"""Build the augmented prompt from retrieved chunks within the chosen model's context limit (pure, deterministic).

It runs inside workflow code, where no tokenizer is at hand, so it budgets with a conservative characters-per-token
estimate; the model service still checks the real token count and answers OUT_OF_RANGE if it were ever exceeded.
"""

from dataclasses import replace

from llmorch_common.contracts import ChatTurn
from orchestrator_svc.inference.contracts import InferenceInput
from orchestrator_svc.retrieval.activities import CitationRecord

# English text averages about 4 characters a token for these tokenizers; 3 leaves headroom for code and symbols.
CHARS_PER_TOKEN = 3
# Room for the chat template, instructions and separators.
OVERHEAD_TOKENS = 64
INSTRUCTIONS = (
    "Answer the question using the context below. Cite sources by their [number]. "
    "If the context does not contain the answer, say so."
)


def query_text(request: InferenceInput) -> str:
    """What retrieval searches for: the last user turn of a chat, or the raw prompt."""
    for turn in reversed(request.messages):
        if turn.role == "user":
            return turn.content
    return request.prompt


def fit_citations(
    citations: tuple[CitationRecord, ...], question_chars: int, context_limit: int, max_tokens: int
) -> tuple[CitationRecord, ...]:
    """The best chunks that fit the context budget; the last one may be cut short, none are reordered."""
    budget = (context_limit - max_tokens - OVERHEAD_TOKENS) * CHARS_PER_TOKEN - question_chars - len(INSTRUCTIONS)
    kept: list[CitationRecord] = []
    for citation in citations:
        cost = len(citation.text) + 8  # "[n] " and newlines
        if cost <= budget:
            kept.append(citation)
            budget -= cost
        elif budget > 200:
            kept.append(replace(citation, text=citation.text[: budget - 8]))
            break
        else:
            break
    return tuple(kept)


def context_block(citations: tuple[CitationRecord, ...]) -> str:
    return "\n\n".join(f"[{number}] ({c.source}) {c.text}" for number, c in enumerate(citations, start=1))


def augment(request: InferenceInput, citations: tuple[CitationRecord, ...]) -> InferenceInput:
    """The request with its question wrapped in retrieved context; chat turns before it are kept as they were."""
    if not citations:
        return request
    question = query_text(request)
    grounded = f"{INSTRUCTIONS}\n\nContext:\n{context_block(citations)}\n\nQuestion: {question}"
    if not request.messages:
        return replace(request, prompt=grounded + "\nAnswer:")
    last_user = max(i for i, turn in enumerate(request.messages) if turn.role == "user")
    turns = list(request.messages)
    turns[last_user] = ChatTurn("user", grounded)
    return replace(request, messages=tuple(turns))


def prefix_fits(request: InferenceInput, prefix: str, max_tokens: int, context_limit: int) -> bool:
    """Whether the prompt, an answer prefix to continue and max_tokens more fit a model's context (estimated)."""
    prompt_chars = sum(len(turn.content) for turn in request.messages) + len(request.prompt) + len(prefix)
    return prompt_chars // CHARS_PER_TOKEN + OVERHEAD_TOKENS + max_tokens <= context_limit
