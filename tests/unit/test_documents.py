"""Files to documents for `cli ingest`: HTML headings become Markdown ones, PDFs give their text, folders recurse."""

from pathlib import Path

import pytest

from llmorch_client.documents import collect, html_to_text, read_document
from llmorch_client.ingest_files import IngestState
from orchestrator_svc.retrieval.chunking import chunk_document

PAGE = """<html><head><title>json — JSON encoder</title><script>var x = 1;</script></head><body>
<div class="related"><a href="index.html">index</a></div>
<div role="main"><section><h1>json — JSON encoder<a class="headerlink" href="#json">¶</a></h1>
<p>Serialize <code>obj</code> to a JSON
formatted <em>str</em>.</p>
<section><h2>Basic Usage</h2><dl><dt>json.dumps(obj)</dt><dd><p>Returns a string.</p></dd></dl>
<pre>&gt;&gt;&gt; json.dumps([1, 2])
'[1, 2]'</pre></section></section></div>
<div class="sphinxsidebar">Quick search</div></body></html>"""

# One page with the text "Hello PDF world", written by hand (offsets in the xref table are exact).
PDF_OBJECTS = [
    b"<< /Type /Catalog /Pages 2 0 R >>",
    b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
    b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 100] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
    b"<< /Length 44 >>\nstream\nBT /F1 12 Tf 20 50 Td (Hello PDF world) Tj ET\nendstream",
    b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
]


def tiny_pdf() -> bytes:
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(PDF_OBJECTS, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(PDF_OBJECTS) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(PDF_OBJECTS) + 1, xref)
    return bytes(out)


def test_html_keeps_headings_and_drops_navigation_scripts_and_permalinks() -> None:
    title, text = html_to_text(PAGE)
    assert title == "json — JSON encoder"
    assert text.startswith("# json — JSON encoder\n\nSerialize obj to a JSON\nformatted str.")
    assert "## Basic Usage" in text and "json.dumps(obj)\n\nReturns a string." in text
    assert ">>> json.dumps([1, 2])\n'[1, 2]'" in text, "preformatted code keeps its lines"
    for noise in ("¶", "var x", "Quick search", "index"):
        assert noise not in text
    paths = [c.heading_path for c in chunk_document("library/json.html", text)]
    assert paths[0] == "json — JSON encoder" and paths[-1] == "json — JSON encoder > Basic Usage"


def test_folders_recurse_to_supported_files_with_ids_relative_to_the_folder(tmp_path: Path) -> None:
    (tmp_path / "docs" / "library").mkdir(parents=True)
    (tmp_path / "docs" / "library" / "json.html").write_text(PAGE)
    (tmp_path / "docs" / "notes.md").write_text("# Notes\n\ntext")
    (tmp_path / "docs" / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "paper.pdf").write_bytes(tiny_pdf())
    (tmp_path / "plain.txt").write_text("plain text")
    found = collect([tmp_path / "docs", tmp_path / "paper.pdf", tmp_path / "plain.txt"])
    documents = [read_document(file, root) for file, root in found]
    assert [d.document_id for d in documents] == ["library/json.html", "notes.md", "paper.pdf", "plain.txt"]
    assert documents[0].metadata == {"path": "library/json.html", "format": "html", "title": "json — JSON encoder"}
    assert documents[2].text == "Hello PDF world" and documents[2].metadata["format"] == "pdf"
    assert documents[3].text == "plain text"
    with pytest.raises(ValueError, match=r"image\.png"):
        collect([tmp_path / "docs" / "image.png"])


def test_the_resume_state_survives_a_restart_and_moves_finished_ingestions_to_done(tmp_path: Path) -> None:
    state = IngestState.load(tmp_path / "state.json")
    state.done["a"] = "hash-a"
    state.pending["ingest-1"] = {"b": "hash-b"}
    state.save()
    reloaded = IngestState.load(tmp_path / "state.json")
    assert (reloaded.done, reloaded.pending) == ({"a": "hash-a"}, {"ingest-1": {"b": "hash-b"}})
    reloaded.finish("ingest-1")
    assert IngestState.load(tmp_path / "state.json").done == {"a": "hash-a", "b": "hash-b"}
