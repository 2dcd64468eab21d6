"""Input and output of the `embed` activity: frozen dataclasses, so fields can be added without breaking runs."""

from dataclasses import dataclass


@dataclass(frozen=True)
class EmbedInput:
    texts: tuple[str, ...]


@dataclass(frozen=True)
class EmbedOutput:
    """One unit-norm vector and one token count (after truncation) per input text, in order."""

    vectors: list[list[float]]
    token_counts: list[int]
