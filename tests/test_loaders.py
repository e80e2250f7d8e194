"""Document loading: format detection, decoding, and the blocks each format yields."""

from __future__ import annotations

import zlib

import pytest

from ragfn.core.errors import UnsupportedContent
from ragfn.ingest.blocks import Block
from ragfn.ingest.loaders import LoadedDocument, load_document

pytestmark = pytest.mark.unit


def make_pdf(pages: list[list[str]], *, padding: int = 0) -> bytes:
    """A minimal valid PDF (Helvetica, one text line per entry), with exact xref offsets, built by hand; `padding`
    spaces in each page's content stream make it Flate-compressed (small on disk, large inflated)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", "", "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for lines in pages:
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops += [f"({escaped}) Tj", "T*"]
        stream = "\n".join([*ops, "ET"])
        if padding:
            stream = zlib.compress((stream + " " * padding).encode("latin-1")).decode("latin-1")
        flate = " /Filter /FlateDecode" if padding else ""
        objects.append(f"<< /Length {len(stream.encode('latin-1'))}{flate} >>\nstream\n{stream}\nendstream")
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {len(objects)} 0 R "
                       "/Resources << /Font << /F1 3 0 R >> >> >>")
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{offset:010d} 00000 n \n" for offset in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def assert_exact(doc: LoadedDocument) -> None:
    """Every text/code block is an exact, trimmed slice of the canonical text, and blocks come in order."""
    previous = 0
    for block in doc.blocks:
        assert block.start >= previous and block.end >= block.start
        if block.kind in ("text", "code"):
            assert doc.text[block.start:block.end] == block.text
            assert block.text == block.text.strip() and block.text
        previous = block.end


def kinds(doc: LoadedDocument) -> list[tuple[str, str]]:
    return [(b.kind, b.text) for b in doc.blocks]


# --- format detection --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "content_type", "expected"), [
    ("notes.txt", None, "text"), ("notes.text", None, "text"), ("server.log", None, "text"),
    ("README.md", None, "markdown"), ("guide.markdown", None, "markdown"),
    ("index.rst", None, "rst"), ("faq/programming.rst.txt", None, "rst"),
    ("page.html", None, "html"), ("page.htm", None, "html"),
    ("s3://bucket/docs/README.MD", None, "markdown"),
    ("noext", "text/markdown", "markdown"), ("page.txt", "text/html; charset=utf-8", "html"),
    ("README.md", "text/plain", "markdown"), ("README.md", "binary/octet-stream", "markdown"),
    ("data.unknown", None, "text"), ("data.unknown", "text/csv", "text"), ("x.json", "application/json", "text"),
])
def test_format_detection(name: str, content_type: str | None, expected: str) -> None:
    doc = load_document(b"Title\n=====\n\n<p>Some text.</p>\n", name=name, content_type=content_type)
    assert doc.format == expected


def test_pdf_detected_by_magic_bytes() -> None:
    assert load_document(make_pdf([["Hello PDF."]]), name="blob").format == "pdf"


# --- plain text --------------------------------------------------------------------------------------------------

def test_plain_text_paragraphs_and_newline_normalisation() -> None:
    doc = load_document(b"\xef\xbb\xbf  First para\r\nline two.\r\n\r\n \r\n\r\nSecond para.\n", name="a.txt")
    assert "\r" not in doc.text and not doc.text.startswith("\ufeff")
    assert kinds(doc) == [("text", "First para\nline two."), ("text", "Second para.")]
    assert_exact(doc)


def test_utf16_with_bom_decodes() -> None:
    doc = load_document("Grüße aus Köln.\n\nZweiter Absatz.".encode("utf-16"), name="de.txt")
    assert kinds(doc) == [("text", "Grüße aus Köln."), ("text", "Zweiter Absatz.")]


def test_declared_charset_is_honoured() -> None:
    doc = load_document("café crème".encode("latin-1"), name="menu.txt", content_type="text/plain; charset=ISO-8859-1")
    assert doc.text == "café crème"


# --- markdown ----------------------------------------------------------------------------------------------------

MARKDOWN = """---
title: front matter is metadata
---
# Install *ragfn*

Intro paragraph
over two lines.

Setext Title
------------

```python
def f():

    return 1
```

    indented code

- item one
- item two
  continued

> quoted
> text

| a | b |
|---|---|
| 1 | 2 |

***

## Deep `code` heading
Last para.
"""


def test_markdown_blocks() -> None:
    doc = load_document(MARKDOWN.replace("\n", "\r\n").encode(), name="README.md")
    assert doc.format == "markdown" and doc.text == MARKDOWN  # the source is the canonical text (LF newlines)
    assert kinds(doc) == [
        ("heading", "Install ragfn"), ("text", "Intro paragraph\nover two lines."), ("heading", "Setext Title"),
        ("code", "```python\ndef f():\n\n    return 1\n```"), ("code", "indented code"),
        ("text", "- item one"), ("text", "- item two\n  continued"), ("text", "> quoted\n> text"),
        ("text", "| a | b |\n|---|---|\n| 1 | 2 |"), ("break", "***"), ("heading", "Deep code heading"),
        ("text", "Last para."),
    ]
    assert [b.level for b in doc.blocks if b.kind == "heading"] == [1, 2, 2]
    assert doc.text[doc.blocks[0].start:doc.blocks[0].end] == "# Install *ragfn*"  # heading spans cover the source
    assert_exact(doc)


# --- reStructuredText --------------------------------------------------------------------------------------------

FAQ_RST = """:tocdepth: 2

===============
Programming FAQ
===============

.. only:: html

   .. contents::

General Questions
=================

Is there a source code level debugger with breakpoints, single-stepping, etc.?
------------------------------------------------------------------------------

Yes.

Several debuggers for Python are described below, and the built-in function
:func:`breakpoint` allows you to drop into any of them.

.. _faq-argument-vs-parameter:

How do I use :func:`sorted` with a key?
---------------------------------------

Pass a function::

   def key(item):
       return item[1]

   sorted(pairs, key=key)

It can also be a lambda:

>>> sorted([(1, 'b'), (2, 'a')], key=lambda p: p[1])
[(2, 'a'), (1, 'b')]

.. note::
   Sorting is stable.

.. code-block:: python
   :linenos:

   print("hi")

----

Core Language
=============

.. function:: compile(source)

   Compile the source.

Why am I getting an UnboundLocalError?
--------------------------------------

It can be a surprise.  This code: ::

   x = 10

.. versionadded:: 3.2
"""


def test_rst_sphinx_faq() -> None:
    doc = load_document(FAQ_RST.encode(), name="faq/programming.rst.txt")
    assert doc.format == "rst" and doc.text == FAQ_RST
    headings = [(b.level, b.text) for b in doc.blocks if b.kind == "heading"]
    assert headings == [
        (1, "Programming FAQ"), (2, "General Questions"),
        (3, "Is there a source code level debugger with breakpoints, single-stepping, etc.?"),
        (3, "How do I use sorted with a key?"),  # roles are unwrapped in titles
        (2, "Core Language"), (3, "Why am I getting an UnboundLocalError?"),
    ]
    body = [(k, t) for k, t in kinds(doc) if k != "heading"]
    assert body == [
        ("text", "Yes."),
        ("text", ("Several debuggers for Python are described below, and the built-in function\n"
                  ":func:`breakpoint` allows you to drop into any of them.")),
        ("text", "Pass a function::"),
        ("code", "def key(item):\n       return item[1]\n\n   sorted(pairs, key=key)"),
        ("text", "It can also be a lambda:"),
        ("code", ">>> sorted([(1, 'b'), (2, 'a')], key=lambda p: p[1])\n[(2, 'a'), (1, 'b')]"),
        ("text", "Sorting is stable."),
        ("code", 'print("hi")'),
        ("break", "----"),
        ("text", ".. function:: compile(source)"),
        ("text", "Compile the source."),
        ("text", "It can be a surprise.  This code: ::"),
        ("code", "x = 10"),
        ("text", ".. versionadded:: 3.2"),
    ]
    assert_exact(doc)


def test_rst_heading_levels_follow_first_appearance() -> None:
    doc = load_document(b"A\n~~~\n\ntext\n\nB\n###\n\ntext\n\nC\n~~~\n\ntext\n", name="x.rst")
    assert [(b.level, b.text) for b in doc.blocks if b.kind == "heading"] == [(1, "A"), (2, "B"), (1, "C")]


# --- HTML --------------------------------------------------------------------------------------------------------

HTML = b"""<!doctype html><html><head><title>T</title><style>p {}</style></head><body><nav>menu</nav>
<h1>Title <small>x</small></h1><div>loose <b>bold</b>text<p>para <a href="#">link</a>.</p></div>
<ul><li>one</li><li>two<ul><li>nested</li></ul></li></ul><pre>code
  indented</pre><hr><table><tr><td>c1</td><td>c2</td></tr></table><script>x()</script><!-- c --></body></html>"""


def test_html_blocks_and_canonical_text() -> None:
    doc = load_document(HTML, name="page.html")
    assert kinds(doc) == [("heading", "Title x"), ("text", "loose boldtext"), ("text", "para link."), ("text", "one"),
                          ("text", "two nested"), ("code", "code\n  indented"), ("break", ""), ("text", "c1"),
                          ("text", "c2")]
    assert doc.text == "Title x\n\nloose boldtext\n\npara link.\n\none\n\ntwo nested\n\ncode\n  indented\n\nc1\n\nc2"
    assert "menu" not in doc.text and "x()" not in doc.text and "T\n" not in doc.text
    assert_exact(doc)
    heading = doc.blocks[0]
    assert doc.text[heading.start:heading.end] == heading.text  # HTML headings are exact slices too


def test_html_prefers_main_content_and_drops_chrome() -> None:
    page = b"""<html><body><div role="navigation"><h3>Navigation</h3><ul><li>index</li></ul></div>
    <div class="document"><div role="main"><h1>Guide<a class="headerlink" href="#guide">\xc2\xb6</a></h1>
    <p>Body<br>text.</p><div role="search"><p>Quick search</p></div></div></div>
    <footer>Copyright</footer></body></html>"""
    doc = load_document(page, name="sphinx.html")
    assert kinds(doc) == [("heading", "Guide"), ("text", "Body text.")]
    without_main = load_document(page.replace(b'role="main"', b""), name="plain.html")
    assert kinds(without_main) == [("heading", "Guide"), ("text", "Body text."), ("text", "Copyright")]


def test_html_meta_charset() -> None:
    doc = load_document('<meta charset="iso-8859-1"><p>café</p>'.encode("latin-1"), name="a.html")
    assert doc.text == "café"


# --- PDF ---------------------------------------------------------------------------------------------------------

def test_pdf_pages_and_page_breaks() -> None:
    doc = load_document(make_pdf([["First page, line one.", "Line two (parens)."], ["Second page."]]), name="doc.pdf")
    assert doc.format == "pdf"
    assert kinds(doc) == [("text", "First page, line one.\nLine two (parens)."), ("break", ""),
                          ("text", "Second page.")]
    assert_exact(doc)
    assert doc.blocks[1] == Block("break", doc.blocks[0].end, doc.blocks[0].end, "")


# --- bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("data", "name", "content_type", "words"), [
    (b"", "empty.txt", None, "empty"),
    (b"  \n\t\n", "blank.md", None, "empty"),
    ("  \n ".encode("utf-16"), "blank16.txt", None, "whitespace"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image.txt", None, "binary"),
    (bytes(range(1, 32)) * 10, "controls.md", None, "binary"),
    ("café crème brûlée".encode("latin-1"), "latin1.txt", None, "decoded"),
    (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog", "broken.pdf", None, "not a readable PDF"),
    (b"this is not a pdf at all", "fake.pdf", None, "not a readable PDF"),
    (make_pdf([[]]), "scanned.pdf", None, "no extractable text"),
    (b"\x89PNG\r\n\x1a\n", "photo", "image/png", "unsupported content type"),
    (b"<html><script>x()</script></html>", "empty.html", None, "no text"),
    (b"plain", "x.txt", "text/plain; charset=no-such-charset", "unknown charset"),
])
def test_bad_input_is_unsupported_content(data: bytes, name: str, content_type: str | None, words: str) -> None:
    with pytest.raises(UnsupportedContent) as caught:
        load_document(data, name=name, content_type=content_type)
    error = caught.value
    assert error.status == 400 and not error.retryable
    assert name in error.message and words in error.message
    assert error.hint  # says what to do


# Security: deeply nested HTML raised RecursionError, which the chunk function answered as a retryable 500, so the
# Broker redelivered the same document again and again.
@pytest.mark.parametrize("tag", ["b", "div", "section"])
def test_html_nested_thousands_deep_loads(tag):
    depth = 20_000
    markup = "<h1>Deep</h1>" + f"<{tag}>" * depth + "the bottom" + f"</{tag}>" * depth
    doc = load_document(markup.encode(), name="deep.html")
    assert "the bottom" in doc.text and doc.text.startswith("Deep")


# Security: pypdf bounds each stream it inflates, but not their sum, so a small PDF of many highly compressed pages
# made the chunk function inflate and parse without bound.
def test_a_pdf_whose_pages_inflate_past_the_budget_is_refused(monkeypatch):
    import ragfn.ingest.loaders as loaders
    from ragfn.core.errors import ObjectTooLarge

    bomb = make_pdf([[f"Page {n}."] for n in range(6)], padding=300_000)
    assert len(bomb) < 10_000
    assert "Page 5." in load_document(bomb, name="fine.pdf").text  # within the default budget
    monkeypatch.setattr(loaders, "MAX_PDF_CONTENT_BYTES", 1_000_000)
    with pytest.raises(ObjectTooLarge, match="inflate to over 1000000 bytes") as refused:
        load_document(bomb, name="bomb.pdf")
    assert "split the PDF" in refused.value.hint
