"""Chunking: size bounds, overlap, boundaries, offsets and deterministic ids."""

import itertools
import pydoc_data.topics

import pytest

from orchestrator_svc.retrieval.chunking import Chunking, chunk_document, chunk_text

SENTENCE = "The quick brown fox jumps over the lazy dog number {}."


def paragraphs(count: int, sentences: int) -> str:
    return "\n\n".join(" ".join(SENTENCE.format(p * 100 + s) for s in range(sentences)) for p in range(count))


def test_short_text_is_one_chunk() -> None:
    chunks = chunk_text("doc", "  Hello world.  ")
    assert [(c.id, c.text, c.start, c.end) for c in chunks] == [("doc#0", "Hello world.", 2, 14)]


def test_empty_or_blank_text_has_no_chunks() -> None:
    assert chunk_text("doc", "") == []
    assert chunk_text("doc", " \n\n \t") == []


def test_chunks_respect_size_and_offsets_and_ids() -> None:
    text = paragraphs(12, 9)
    chunks = chunk_text("guide", text, target_chars=800, overlap_chars=150)
    assert len(chunks) > 5
    assert [c.id for c in chunks] == [f"guide#{i}" for i in range(len(chunks))]
    for chunk in chunks:
        assert len(chunk.text) <= 800
        assert text[chunk.start : chunk.end] == chunk.text
        # Sentence boundaries: every chunk starts a sentence and ends one.
        assert chunk.text[0].isupper() and chunk.text.endswith(".")
    assert chunks[0].start == 0 and chunks[-1].end == len(text)


def test_consecutive_chunks_overlap_without_gaps() -> None:
    chunks = chunk_text("d", paragraphs(6, 12), target_chars=500, overlap_chars=120)
    for previous, current in itertools.pairwise(chunks):
        assert current.start > previous.start, "always moves forward"
        assert current.start <= previous.end, "no text is skipped"
        assert previous.end - current.start <= 120
    assert all(current.start < previous.end for previous, current in itertools.pairwise(chunks)), "overlap exists"


def test_zero_overlap_tiles_the_text() -> None:
    text = paragraphs(5, 10)
    chunks = chunk_text("d", text, target_chars=400, overlap_chars=0)
    for previous, current in itertools.pairwise(chunks):
        assert current.start >= previous.end
        assert text[previous.end : current.start].strip() == ""


def test_paragraphs_are_kept_whole_when_they_fit() -> None:
    first, second = "A" * 300 + ".", "B" * 300 + "."
    chunks = chunk_text("d", f"{first}\n\n{second}\n\n{'C' * 300}.", target_chars=700, overlap_chars=0)
    assert [c.text for c in chunks] == [f"{first}\n\n{second}", "C" * 300 + "."]


def test_a_sentence_longer_than_the_target_is_split_at_words() -> None:
    words = " ".join(f"word{i}" for i in range(400))
    chunks = chunk_text("d", words, target_chars=200, overlap_chars=0)
    assert all(len(c.text) <= 200 for c in chunks)
    assert " ".join(c.text for c in chunks) == words


def test_a_word_longer_than_the_target_is_cut() -> None:
    chunks = chunk_text("d", "x" * 1000, target_chars=300, overlap_chars=0)
    assert [len(c.text) for c in chunks] == [300, 300, 300, 100]


def test_deterministic() -> None:
    text = pydoc_data.topics.topics["class"]
    assert chunk_text("class", text) == chunk_text("class", text)


def test_real_documentation_chunks_stay_near_the_target() -> None:
    text = pydoc_data.topics.topics["assignment"]
    chunks = chunk_text("assignment", text)
    assert all(len(c.text) <= 800 for c in chunks)
    # Packing, not one chunk per sentence: most chunks are well filled.
    assert sum(len(c.text) for c in chunks) / len(chunks) > 400


@pytest.mark.parametrize(("target", "overlap"), [(0, 0), (100, 100), (100, -1)])
def test_bad_parameters(target: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_text("d", "text", target, overlap)


MARKDOWN = """Preface before any heading.

# Guide

Intro paragraph.

## Install

Steps here.

### On Linux

Use apt.

## Use

Run it. # not a heading: not at a line start
"""


def test_sections_carry_the_heading_path_and_never_cross_a_heading() -> None:
    chunks = chunk_document("guide.md", MARKDOWN)
    assert [(c.heading_path, c.text) for c in chunks] == [
        ("", "Preface before any heading."),
        ("Guide", "Intro paragraph."),
        ("Guide > Install", "Steps here."),
        ("Guide > Install > On Linux", "Use apt."),
        ("Guide > Use", "Run it. # not a heading: not at a line start"),
    ]
    assert [c.id for c in chunks] == [f"guide.md#{i}" for i in range(5)]
    for chunk in chunks:
        assert MARKDOWN[chunk.start : chunk.end] == chunk.text, "offsets point into the document"
    assert chunks[3].indexed_text == "Guide > Install > On Linux\n\nUse apt."


def test_restructured_text_underlines_rank_by_first_appearance() -> None:
    """pydoc_data.topics: the title underlined with "*", its sections with "="."""
    text = pydoc_data.topics.topics["naming"]
    paths = {c.heading_path for c in chunk_document("naming", text)}
    assert paths == {
        "Naming and binding > Binding of names",
        "Naming and binding > Resolution of names",
        "Naming and binding > Builtins and restricted execution",
        "Naming and binding > Interaction with dynamic features",
    }


def test_a_short_rule_or_a_table_border_is_not_a_heading() -> None:
    text = "Title\n=====\n\nA long line of text\n---\n\n+-----+-----+\n| a   | b   |\n+-----+-----+\n"
    [chunk] = chunk_document("t", text)
    assert chunk.heading_path == "Title" and chunk.text.startswith("A long line of text\n---")


def test_flat_chunking_is_the_old_chunker() -> None:
    text = pydoc_data.topics.topics["class"]
    assert chunk_document("class", text, Chunking.FLAT) == chunk_text("class", text)
    assert all(c.heading_path == "" and c.indexed_text == c.text for c in chunk_document("c", text, Chunking.FLAT))


def test_section_chunks_of_the_whole_reference_stay_within_the_target() -> None:
    for key, text in pydoc_data.topics.topics.items():
        chunks = chunk_document(key, text)
        assert chunks, key
        assert all(len(c.text) <= 800 and c.heading_path for c in chunks), key
