"""Split documents into overlapping chunks by section, paragraph and sentence, deterministically (pure functions)."""

import re
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_TARGET_CHARS = 800
DEFAULT_OVERLAP_CHARS = 150
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WHITESPACE = re.compile(r"\s+")
# A Markdown ATX heading ("## Title"), or a reStructuredText title: a line underlined (and maybe overlined) with one
# punctuation character repeated at least as long as the title, as pydoc_data.topics and Sphinx's text output write.
_ATX_HEADING = re.compile(r"^(#{1,6})[ \t]+(?P<title>[^\n]*?)[ \t#]*$", re.MULTILINE)
_RST_HEADING = re.compile(r"^(?P<title>[^\s][^\n]*)\n(?P<rule>([=*\-~^\"'+#])\3{2,})[ \t]*$", re.MULTILINE)
HEADING_PATH_KEY = "heading_path"
PATH_SEPARATOR = " > "


class Chunking(StrEnum):
    FLAT = "flat"
    SECTIONS = "sections"


@dataclass(frozen=True)
class TextChunk:
    id: str
    index: int
    text: str
    # Character offsets into the document, so a citation can point back at its source.
    start: int
    end: int
    # "Document > Section > Subsection" for section chunking; empty for flat chunking.
    heading_path: str = ""

    @property
    def indexed_text(self) -> str:
        """What is embedded, full-text indexed and stored: the heading path leads, so a chunk deep in a section
        still says what it is about."""
        return f"{self.heading_path}\n\n{self.text}" if self.heading_path else self.text


@dataclass(frozen=True)
class Section:
    # Headings from the document's title down to this section's own; empty before the first heading.
    path: tuple[str, ...]
    # The section's body (without its heading) as offsets into the document.
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


def chunk_document(
    document_id: str,
    text: str,
    chunking: Chunking = Chunking.SECTIONS,
    target_chars: int = DEFAULT_TARGET_CHARS,
    overlap_chars: int = DEFAULT_OVERLAP_CHARS,
) -> list[TextChunk]:
    """Flat chunking, or chunks that never cross a heading and carry their heading path; ids number all chunks."""
    if chunking == Chunking.FLAT:
        return chunk_text(document_id, text, target_chars, overlap_chars)
    chunks: list[TextChunk] = []
    for section in sections(text):
        path = PATH_SEPARATOR.join(section.path)
        for piece in chunk_text(document_id, text[section.start : section.end], target_chars, overlap_chars):
            index = len(chunks)
            start, end = section.start + piece.start, section.start + piece.end
            chunks.append(TextChunk(chunk_id(document_id, index), index, piece.text, start, end, path))
    return chunks


def sections(text: str) -> list[Section]:
    """The document cut at every heading. A heading's level is its "#" count, or for reStructuredText the order
    in which its underline character first appears (Sphinx's rule). Text before the first heading, or in a
    document without headings, has an empty path, so its chunks are exactly what flat chunking makes of it."""
    headings: list[tuple[int, int, str, str]] = []  # start, end, title, level key
    for match in _ATX_HEADING.finditer(text):
        headings.append((match.start(), match.end(), match["title"].strip(), match.group(1)))
    for match in _RST_HEADING.finditer(text):
        if len(match["rule"]) >= len(match["title"].rstrip()):
            headings.append((match.start(), match.end(), match["title"].strip(), "rst" + match["rule"][0]))
    headings.sort()
    levels: dict[str, int] = {}
    path: list[tuple[int, str]] = []  # (level, title)
    found: list[Section] = []
    cursor = 0
    current: tuple[str, ...] = ()
    for start, end, title, key in headings:
        if start < cursor:  # an underline that is itself followed by a rule, or overlapping matches
            continue
        found.append(Section(current, cursor, start))
        level = len(key) if key.startswith("#") else levels.setdefault(key, 10 + len(levels))
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, title))
        current = tuple(title for _, title in path)
        cursor = end
    found.append(Section(current, cursor, len(text)))
    return [s for s in found if text[s.start : s.end].strip()]


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
