"""Split documents into overlapping chunks on paragraph and sentence boundaries, deterministically (pure functions)."""

import re
from dataclasses import dataclass

DEFAULT_TARGET_CHARS = 800
DEFAULT_OVERLAP_CHARS = 150
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class TextChunk:
    id: str
    index: int
    text: str
    # Character offsets into the document, so a citation can point back at its source.
    start: int
    end: int


def chunk_id(document_id: str, index: int) -> str:
    return f"{document_id}#{index}"


def chunk_text(
    document_id: str,
    text: str,
    target_chars: int = DEFAULT_TARGET_CHARS,
    overlap_chars: int = DEFAULT_OVERLAP_CHARS,
) -> list[TextChunk]:
    """Chunks of at most about target_chars; each repeats up to overlap_chars of whole sentences from the last."""
    if target_chars < 1 or not 0 <= overlap_chars < target_chars:
        raise ValueError("need target_chars >= 1 and 0 <= overlap_chars < target_chars")
    units = _units(text, target_chars)
    chunks: list[TextChunk] = []
    first = 0
    while first < len(units):
        last = first
        while last + 1 < len(units) and units[last + 1][1] - units[first][0] <= target_chars:
            last += 1
        start, end = units[first][0], units[last][1]
        chunks.append(TextChunk(chunk_id(document_id, len(chunks)), len(chunks), text[start:end], start, end))
        if last + 1 >= len(units):
            break
        first = _overlap_start(units, first, last, overlap_chars)
    return chunks


def _overlap_start(units: list[tuple[int, int]], first: int, last: int, overlap_chars: int) -> int:
    """Step back over whole units that fit in the overlap, but always move forward by at least one unit."""
    next_first = last + 1
    while next_first - 1 > first and units[last][1] - units[next_first - 1][0] <= overlap_chars:
        next_first -= 1
    return next_first


def _units(text: str, target_chars: int) -> list[tuple[int, int]]:
    """Spans of paragraphs, or of sentences in paragraphs too long, or of word-aligned pieces of sentences too long."""
    spans: list[tuple[int, int]] = []
    for paragraph in _split(text, 0, len(text), _PARAGRAPH_BREAK):
        if paragraph[1] - paragraph[0] <= target_chars:
            spans.append(paragraph)
            continue
        for sentence in _split(text, *paragraph, _SENTENCE_END):
            if sentence[1] - sentence[0] <= target_chars:
                spans.append(sentence)
            else:
                spans.extend(_hard_split(text, *sentence, target_chars))
    return spans


def _split(text: str, start: int, end: int, separator: re.Pattern[str]) -> list[tuple[int, int]]:
    """Non-blank spans between separators, trimmed of surrounding whitespace."""
    spans = []
    cursor = start
    for match in separator.finditer(text, start, end):
        spans.append((cursor, match.start()))
        cursor = match.end()
    spans.append((cursor, end))
    return [trimmed for span in spans if (trimmed := _trim(text, *span)) is not None]


def _trim(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _hard_split(text: str, start: int, end: int, target_chars: int) -> list[tuple[int, int]]:
    """Cut at the last whitespace before the limit; a single word longer than the limit is cut mid-word."""
    pieces = []
    while end - start > target_chars:
        limit = start + target_chars
        cut = max((m.start() for m in _WHITESPACE.finditer(text, start + 1, limit)), default=limit)
        pieces.append((start, cut))
        start = cut
        while start < end and text[start].isspace():
            start += 1
    if start < end:
        pieces.append((start, end))
    return pieces
