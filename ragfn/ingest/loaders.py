"""Turn stored objects (text, Markdown, reStructuredText, HTML, PDF) into canonical text plus structural blocks."""

from __future__ import annotations

import codecs
import io
import re
from dataclasses import dataclass

from ragfn.core.errors import ObjectTooLarge, UnsupportedContent
from ragfn.ingest.blocks import Block, Blocks, line_starts
from ragfn.ingest.rst import rst_blocks

FORMATS_HINT = "ragfn ingests plain text, Markdown, reStructuredText, HTML and PDF"
MAX_PDF_CONTENT_BYTES = 128 * 1024 * 1024  # all pages' content streams, inflated; a 1,000-page book has a few MB


@dataclass(frozen=True)
class LoadedDocument:
    text: str  # canonical text: chunk offsets refer to it
    blocks: list[Block]
    format: str  # "text" | "markdown" | "rst" | "html" | "pdf"


_BY_TYPE = {"text/plain": "text", "text/markdown": "markdown", "text/x-markdown": "markdown", "text/x-rst": "rst",
            "text/prs.fallenstein.rst": "rst", "text/html": "html", "application/xhtml+xml": "html",
            "application/pdf": "pdf"}
# Types that say nothing about the format (S3's default is binary/octet-stream): the extension decides instead.
_GENERIC = {"", "text/plain", "application/octet-stream", "binary/octet-stream"}
# `.rst.txt` before `.txt`: Sphinx ships its sources as `*.rst.txt`, and they are rst, not plain text.
_BY_EXT = {".rst.txt": "rst", ".txt": "text", ".text": "text", ".log": "text", ".md": "markdown",
           ".markdown": "markdown", ".rst": "rst", ".html": "html", ".htm": "html", ".pdf": "pdf"}


def load_document(data: bytes, *, name: str, content_type: str | None = None) -> LoadedDocument:
    """Parse `data`, the object called `name`; raises UnsupportedContent (a permanent 400) for what cannot be read."""
    if not data.strip():
        raise UnsupportedContent(f"{name} is empty", hint="upload a document that contains text")
    fmt, charset = _detect(data, name, content_type)
    if fmt in ("pdf", "html"):
        text, blocks = _join(_pdf_parts(data, name) if fmt == "pdf" else _html_parts(_decode(data, name, fmt, charset)))
    else:
        text = _decode(data, name, fmt, charset)
        blocks = {"markdown": _markdown, "rst": rst_blocks}.get(fmt, _plain)(text)
    if not any(block.kind in ("text", "code") for block in blocks):
        raise UnsupportedContent(f"{name} has no text to index", hint="upload a document that contains body text")
    return LoadedDocument(text, blocks, fmt)


def _detect(data: bytes, name: str, content_type: str | None) -> tuple[str, str | None]:
    mime, _, params = (content_type or "").partition(";")
    mime = mime.strip().lower()
    charset = found.group(1) if (found := re.search(r"charset\s*=\s*[\"']?([\w.:-]+)", params, re.IGNORECASE)) else None
    if mime in _BY_TYPE and mime not in _GENERIC:
        return _BY_TYPE[mime], charset
    base = name.rsplit("/", 1)[-1].lower()
    if fmt := next((fmt for ext, fmt in _BY_EXT.items() if base.endswith(ext)), None):
        return fmt, charset
    if data.startswith(b"%PDF-"):
        return "pdf", charset
    if mime in _GENERIC or mime.startswith("text/") or mime.endswith(("json", "xml", "yaml", "toml", "javascript")):
        return "text", charset  # decoding rejects it if it is not really text
    raise UnsupportedContent(f"{name} has an unsupported content type {mime!r}", hint=FORMATS_HINT)


def _decode(data: bytes, name: str, fmt: str, charset: str | None) -> str:
    label = {"text": "plain text", "markdown": "Markdown", "rst": "reStructuredText", "html": "HTML"}[fmt]
    binary = UnsupportedContent(f"{name} looks like binary data, not {label}", hint=f"{FORMATS_HINT}; convert it first")
    if data[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
        encoding = "utf-32"
    elif data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        encoding = "utf-16"  # a BOM is the only reliable sign of UTF-16: without one we never guess it
    elif b"\x00" in data:
        raise binary
    else:
        meta = re.search(rb"<meta[^>]+charset\s*=\s*[\"']?([\w.:-]+)", data[:4096], re.IGNORECASE)
        charset = charset or (meta.group(1).decode("ascii") if meta and fmt == "html" else None)
        # A declared charset is honoured; otherwise UTF-8 only: silently decoding as latin-1 would index mojibake.
        try:
            encoding = "utf-8-sig" if codecs.lookup(charset or "utf-8").name == "utf-8" else str(charset)
        except LookupError as exc:
            raise UnsupportedContent(f"{name} declares an unknown charset {charset!r}",
                                     hint="re-encode it as UTF-8, or fix the declared charset") from exc
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UnsupportedContent(f"{name} cannot be decoded as {encoding.removesuffix('-sig').upper()} "
                                 f"({exc.reason} at byte {exc.start})",
                                 hint="re-encode it as UTF-8, or declare its charset in the content type") from exc
    sample = text[:100_000]
    controls = sum(1 for c in sample if (c < " " and c not in "\t\n\r\f\v\x1b") or c == "\x7f")  # ESC: coloured logs
    if "\x00" in sample or controls > 0.05 * len(sample):
        raise binary
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # one newline convention keeps every offset simple
    if not text.strip():
        raise UnsupportedContent(f"{name} contains only whitespace", hint="upload a document that contains text")
    return text


def _plain(text: str) -> list[Block]:
    out, pos = Blocks(text), 0
    for blank in re.finditer(r"\n[ \t]*\n\s*", text):
        out.add("text", pos, blank.start())
        pos = blank.end()
    out.add("text", pos, len(text))
    return out


def _markdown(text: str) -> list[Block]:
    from markdown_it import MarkdownIt

    out, starts = Blocks(text), line_starts(text)
    # YAML front matter is metadata, not prose: blank it out (same line count, so token.map stays valid).
    front = re.match(r"---[ \t]*\n.*?\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", text, re.DOTALL)
    tokens = MarkdownIt("commonmark").enable("table").parse(
        "\n" * front.group(0).count("\n") + text[front.end():] if front else text)
    kinds = {"paragraph_open": "text", "blockquote_open": "text", "table_open": "text", "list_item_open": "text",
             "html_block": "text", "fence": "code", "code_block": "code", "hr": "break"}
    for i, tok in enumerate(tokens):
        # Top-level blocks only (and each top-level list item): nested content belongs to its container.
        if tok.map is None or not (tok.level == 0 or (tok.type == "list_item_open" and tok.level == 1)):
            continue
        span = (starts[tok.map[0]], starts[tok.map[1]] - 1)
        if tok.type == "heading_open":
            title = "".join(" " if c.type.endswith("break") else c.content for c in tokens[i + 1].children or [])
            out.add("heading", *span, level=int(tok.tag[1:]), title=" ".join(title.split()))
        elif tok.type in kinds and not (tok.type == "html_block" and tok.content.lstrip().startswith("<!--")):
            out.add(kinds[tok.type], *span)
    return out


_DROP = {"script", "style", "nav", "head", "noscript", "template", "svg", "iframe", "button", "select", "textarea"}
_DROP_ROLES = {"navigation", "search", "banner", "contentinfo"}  # site chrome marked up without <nav>, e.g. by Sphinx
_ANCHORS = {"¶", "§", "#", "🔗"}  # permalink markers after headings
_TEXT_TAGS = {"p", "li", "blockquote", "td", "th", "dt", "dd", "caption", "figcaption"}
_INLINE = {"a", "abbr", "b", "bdi", "bdo", "cite", "code", "data", "del", "dfn", "em", "font", "i", "ins", "kbd",
           "label", "mark", "q", "s", "samp", "small", "span", "strong", "sub", "sup", "time", "tt", "u", "var"}


def _html_parts(markup: str) -> list[tuple[str, str, int]]:
    from bs4 import BeautifulSoup
    from bs4.element import NavigableString, PreformattedString, Tag

    def dropped(tag: Tag) -> bool:
        anchor = tag.name == "a" and tag.get_text().strip() in _ANCHORS
        return anchor or tag.name in _DROP or tag.get("role") in _DROP_ROLES

    # Both walks keep their own stack: a document nested thousands of tags deep (which a parser accepts) must not
    # exhaust Python's recursion limit.
    def text_of(root: object) -> str:  # inline children join as they are ("Hel<b>lo</b>"), others with a space
        out: list[str] = []
        stack: list[object] = [root]
        while stack:
            node = stack.pop()
            if isinstance(node, tuple):  # the space after a block's children
                out.append(node[0])
            elif isinstance(node, NavigableString):  # PreformattedString: comments, doctypes, CDATA
                out.append("" if isinstance(node, PreformattedString) else str(node))
            elif isinstance(node, Tag) and not dropped(node):
                edge = "" if node.name in _INLINE else " "
                out.append(edge)
                stack.append((edge,))
                stack.extend(reversed(node.contents))
        return "".join(out)

    parts: list[tuple[str, str, int]] = []
    loose: list[str] = []  # text directly inside containers such as <div>

    def walk(root: Tag) -> None:
        stack = [iter(root.contents)]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
            elif not isinstance(child, Tag) or child.name in _INLINE:
                loose.append(text_of(child))
            elif not dropped(child):
                name = child.name
                parts.append(("text", " ".join("".join(loose).split()), 0))
                loose.clear()
                if re.fullmatch(r"h[1-6]", name):
                    parts.append(("heading", " ".join(text_of(child).split()), int(name[1])))
                elif name in ("pre", "hr", *_TEXT_TAGS):
                    body = text_of(child).strip() if name == "pre" else " ".join(text_of(child).split())
                    parts.append(({"pre": "code", "hr": "break"}.get(name, "text"), body, 0))
                else:
                    stack.append(iter(child.contents))

    soup = BeautifulSoup(markup, "html.parser")
    walk(soup.find("main") or soup.find(role="main") or soup)  # marked main content: the rest is chrome
    parts.append(("text", " ".join("".join(loose).split()), 0))
    return parts


def _pdf_parts(data: bytes, name: str) -> list[tuple[str, str, int]]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnsupportedContent(f"{name} is an encrypted PDF", hint="upload an unencrypted copy")
        pages, content = [], 0
        for page in reader.pages:
            # pypdf bounds each stream it inflates (75 MB); this bounds them all together, so a small file of many
            # highly compressed pages cannot make the chunk function inflate and parse gigabytes
            stream = page.get_contents()
            content += len(stream.get_data()) if stream is not None else 0
            if content > MAX_PDF_CONTENT_BYTES:
                raise ObjectTooLarge(f"{name}'s pages inflate to over {MAX_PDF_CONTENT_BYTES} bytes of content",
                                     hint="split the PDF into smaller files")
            pages.append(page.extract_text() or "")
    except (UnsupportedContent, ObjectTooLarge):
        raise
    except Exception as exc:  # pypdf raises many types on corrupt input; all of them mean the same to the sender
        raise UnsupportedContent(f"{name} is not a readable PDF ({type(exc).__name__}: {exc})",
                                 hint="check that the upload is complete, or re-export the PDF") from exc
    parts: list[tuple[str, str, int]] = []
    for page in (p.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").strip() for p in pages):
        if page:
            parts += [("break", "", 0)] if parts else []  # a page boundary
            parts += [("text", para.strip(), 0) for para in re.split(r"\n[ \t]*\n\s*", page)]
    if not parts:
        raise UnsupportedContent(f"{name} is a PDF with no extractable text",
                                 hint="it is probably scanned images: run OCR (e.g. ocrmypdf) and upload the result")
    return parts


def _join(parts: list[tuple[str, str, int]]) -> tuple[str, list[Block]]:
    """Canonical text for re-rendered formats (HTML, PDF): block texts joined by blank lines, offsets built as we go."""
    pieces: list[str] = []
    blocks: list[Block] = []
    pos = 0
    for kind, text, level in parts:
        if kind == "break" and blocks and blocks[-1].kind != "break":
            blocks.append(Block("break", pos, pos, ""))
        elif kind != "break" and text:
            pos += 2 if pieces else 0
            blocks.append(Block(kind, pos, pos + len(text), text, level))  # type: ignore[arg-type]
            pieces.append(text)
            pos += len(text)
    return "\n\n".join(pieces), blocks
