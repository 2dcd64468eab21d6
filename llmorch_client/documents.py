"""Files to documents for ingestion: Markdown and text as they are, HTML and PDF turned into text with headings."""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bs4 import BeautifulSoup, Tag
from pypdf import PdfReader

SUFFIXES = frozenset({".md", ".txt", ".html", ".htm", ".pdf"})
HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
# Block elements end a paragraph, so the chunker's paragraph splits follow the page's own blocks.
BLOCKS = ("p", "pre", "li", "dt", "dd", "tr", "blockquote", "table", "dl", "ul", "ol", "div", "section")
# Sphinx's main column, then any page's <main>, then the whole body.
MAIN_SELECTORS = ('div[role="main"]', "main", "article", "body")
# Navigation, scripts and Sphinx's "¶" permalinks are not content.
NOISE_SELECTORS = ("script", "style", "nav", "a.headerlink", "div.sphinxsidebar", "div.related", "footer")
_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


@dataclass(frozen=True)
class FileDocument:
    document_id: str
    text: str
    metadata: dict[str, str]


def collect(paths: Iterable[Path]) -> list[tuple[Path, Path]]:
    """(file, root) for every supported file, folders searched recursively, in a stable order; a file's id is its
    path relative to its root: the folder it was found in, or its own folder when named directly."""
    found: dict[Path, Path] = {}
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.is_file() and file.suffix.lower() in SUFFIXES:
                    found.setdefault(file, path)
        elif path.suffix.lower() in SUFFIXES:
            found.setdefault(path, path.parent)
        else:
            raise ValueError(f"{path}: not a folder or a {', '.join(sorted(SUFFIXES))} file")
    return sorted(found.items(), key=lambda item: item[0].relative_to(item[1]).as_posix())


def read_document(file: Path, root: Path) -> FileDocument:
    document_id = file.relative_to(root).as_posix()
    suffix = file.suffix.lower()
    if suffix in (".html", ".htm"):
        title, text = html_to_text(file.read_text(encoding="utf-8", errors="replace"))
    elif suffix == ".pdf":
        title, text = pdf_to_text(file)
    else:
        title, text = "", file.read_text(encoding="utf-8", errors="replace")
    metadata = {"path": document_id, "format": suffix.lstrip(".")}
    if title:
        metadata["title"] = title
    return FileDocument(document_id, text, metadata)


def html_to_text(html: str) -> tuple[str, str]:
    """(title, text): headings become Markdown "#" lines, which the server's section chunking splits on."""
    soup = BeautifulSoup(html, "html.parser")
    for selector in NOISE_SELECTORS:
        for element in soup.select(selector):
            element.decompose()
    main = next((found for s in MAIN_SELECTORS if (found := soup.select_one(s)) is not None), soup)
    for heading in main.find_all(HEADINGS):
        assert isinstance(heading, Tag)
        level = int(heading.name[1])
        heading.replace_with(f"\n\n{'#' * level} {heading.get_text(' ', strip=True)}\n\n")
    for block in main.find_all(BLOCKS):
        assert isinstance(block, Tag)
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    text = _BLANK_LINES.sub("\n\n", _TRAILING_SPACE.sub("\n", main.get_text())).strip()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    return title, text


def pdf_to_text(file: Path) -> tuple[str, str]:
    """(title, text): a PDF has no reliable headings, so its pages are paragraphs under the document's title."""
    reader = PdfReader(file)
    title = str(reader.metadata.title or "") if reader.metadata else ""
    pages = [(page.extract_text() or "").strip() for page in reader.pages]
    return title, "\n\n".join(page for page in pages if page)
