"""Turn stored objects (text, Markdown, reStructuredText, HTML, PDF) into canonical text plus structural blocks."""

from __future__ import annotations

import codecs
import io
import re
import unicodedata
from dataclasses import dataclass
from itertools import accumulate
from typing import Literal

from ragfn.errors import UnsupportedContent

FORMATS_HINT = "ragfn ingests plain text, Markdown, reStructuredText, HTML and PDF"


@dataclass(frozen=True)
class Block:
    """One structural unit: text/code blocks have `text == doc.text[start:end]`; a heading's text is its clean title."""

    kind: Literal["heading", "text", "code", "break"]  # break: a thematic break or page break (may be zero-width)
    start: int
    end: int
    text: str
    level: int = 0  # heading level, 1 = top


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
        blocks = {"markdown": _markdown, "rst": _rst}.get(fmt, _plain)(text)
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


class _Blocks(list[Block]):
    """Collects blocks over one text, trimming each span so no block starts or ends with whitespace."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def add(self, kind: str, start: int, end: int, level: int = 0, title: str | None = None) -> None:
        span = self.text[start:end]
        stripped = span.strip()
        text = stripped if title is None else title
        if kind == "break" or text:
            s = start + len(span) - len(span.lstrip())
            self.append(Block(kind, s, s + len(stripped), text, level))  # type: ignore[arg-type]


def _plain(text: str) -> list[Block]:
    out, pos = _Blocks(text), 0
    for blank in re.finditer(r"\n[ \t]*\n\s*", text):
        out.add("text", pos, blank.start())
        pos = blank.end()
    out.add("text", pos, len(text))
    return out


def _line_starts(text: str) -> list[int]:
    """starts[i] is the offset of line i; one extra entry past the end makes `starts[j] - 1` the end of line j - 1."""
    return [0, *accumulate(len(line) + 1 for line in text.split("\n"))]


def _markdown(text: str) -> list[Block]:
    from markdown_it import MarkdownIt

    out, starts = _Blocks(text), _line_starts(text)
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


_ADORN = re.compile(r"([!-/:-@\[-`{-~])\1+[ \t]*\Z")  # one repeated non-alphanumeric ASCII character
_DIRECTIVE = re.compile(r"\.\.[ \t]+([\w.+-]+(?::[\w.+-]+)*)::(?:[ \t]+(.*)|[ \t]*)\Z")
_FIELD = re.compile(r":[\w .-]+:(?:[ \t]|\Z)")
_ROLE = re.compile(r"(?::[\w.+-]+)+:`([^`<]*?)\s*(?:<[^`]*>)?`|``([^`]*)``")
_CODE_DIRECTIVES = {"code", "code-block", "sourcecode", "doctest", "testcode", "testoutput", "parsed-literal",
                    "productionlist"}
_SKIP_DIRECTIVES = {"contents", "toctree", "index", "highlight", "image", "include", "literalinclude", "raw", "meta",
                    "sectnum", "tabularcolumns", "module", "currentmodule", "moduleauthor", "sectionauthor",
                    "codeauthor", "default-role", "role", "program"}
_CONDITIONS = {"only", "ifconfig"}  # their argument is a build condition, not prose


def _adorn(line: str) -> bool:
    return bool(_ADORN.match(line)) and line.strip() not in ("::", "..")


def _indent(line: str) -> int:
    return len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip())


def _width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s.strip())


def _rst(text: str) -> list[Block]:
    scanner = _Rst(text)
    scanner.scan(0, len(scanner.lines), top=True)
    return scanner.out


class _Rst:
    """A line-based reStructuredText block scanner. docutils reports no character offsets and fails on Sphinx's
    directives and roles, so we recognise just the block structure chunking needs: section titles (levels in
    order of first appearance of each adornment style, like docutils), paragraphs, `::` literal blocks,
    directives (code-like ones are code, others are scanned as nested content), block quotes and transitions."""

    def __init__(self, text: str) -> None:
        self.lines, self.starts, self.out = text.split("\n"), _line_starts(text), _Blocks(text)
        self.styles: list[tuple[str, bool]] = []

    def add(self, kind: str, i: int, j: int, **heading: object) -> None:
        self.out.add(kind, self.starts[i], self.starts[j] - 1, **heading)  # type: ignore[arg-type]

    def indented_end(self, i: int, hi: int, indent: int) -> int:
        """The first line at or after i that is non-blank and indented no deeper than `indent`."""
        while i < hi and (not self.lines[i].strip() or _indent(self.lines[i]) > indent):
            i += 1
        return i

    def heading(self, i: int, hi: int) -> int:
        """Lines taken by a section title starting at line i (0 when there is none)."""
        lines, line = self.lines, self.lines[i]
        if _adorn(line) and i + 2 < hi and lines[i + 1].strip() and _adorn(lines[i + 2]) \
                and lines[i + 2][0] == line[0] and _width(line) >= _width(lines[i + 1]):
            title, style, taken = lines[i + 1], (line[0], True), 3
        elif i + 1 < hi and not _adorn(line) and _adorn(lines[i + 1]) \
                and (_width(lines[i + 1]) >= _width(line) or _width(lines[i + 1]) >= 4):  # docutils: short is a warning
            title, style, taken = line, (lines[i + 1][0], False), 2
        else:
            return 0
        self.styles += [] if style in self.styles else [style]
        clean = _ROLE.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), title.strip())
        self.add("heading", i, i + taken, level=self.styles.index(style) + 1, title=clean)
        return taken

    def scan(self, lo: int, hi: int, top: bool) -> None:
        lines, i, base, literal = self.lines, lo, None, False
        while i < hi:
            line, start, literal_before = lines[i], i, literal
            literal = False
            if not line.strip():
                i, literal = i + 1, literal_before  # blank lines separate, they do not end a pending `::`
                continue
            indent = _indent(line)
            base = indent if base is None else base
            if top and indent == 0 and (taken := self.heading(i, hi)):
                i += taken
            elif _adorn(line) and len(line.strip()) >= 4 and (i == lo or not lines[i - 1].strip()) \
                    and (i + 1 >= hi or not lines[i + 1].strip()):
                self.add("break", i, i + 1)
                i += 1
            elif re.match(r"\.\.(?:[ \t]|\Z)", line.lstrip()):  # explicit markup: directive, comment, target, footnote
                i = self.indented_end(i + 1, hi, indent)
                self.explicit(start, i)
            elif indent > base:  # a literal block after `::`, otherwise a block quote with its own structure
                i = self.indented_end(i, hi, base)
                self.add("code", start, i) if literal_before else self.scan(start, i, top=False)
            else:
                while i < hi and lines[i].strip():
                    i += 1
                para = "\n".join(lines[start:i]).strip()
                if not self.out and all(_FIELD.match(x) for x in lines[start:i]):
                    pass  # file-wide fields such as `:tocdepth: 2` are build metadata
                elif para != "::":
                    self.add("code" if para.startswith(">>>") else "text", start, i)
                literal = para.endswith("::")

    def explicit(self, i: int, end: int) -> None:
        stripped = self.lines[i].strip()
        if (directive := _DIRECTIVE.match(stripped)) is None:
            if stripped.startswith(".. ["):  # footnotes and citations are prose; comments and targets are not
                self.add("text", i, end)
            return
        name, args, body = directive.group(1).lower(), (directive.group(2) or "").strip(), i + 1
        while body < end and self.lines[body].strip() and _FIELD.match(self.lines[body].lstrip()):
            body += 1  # directive options
        if name in _CODE_DIRECTIVES:
            self.add("code", body, end)
        elif name not in _SKIP_DIRECTIVES:
            if args and name not in _CONDITIONS:
                self.add("text", i, i + 1)
            self.scan(body, end, top=False)


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

    def text_of(node: object) -> str:  # inline children join as they are ("Hel<b>lo</b>"), others with a space
        if isinstance(node, NavigableString):  # PreformattedString: comments, doctypes, CDATA
            return "" if isinstance(node, PreformattedString) else str(node)
        if not isinstance(node, Tag) or dropped(node):
            return ""
        inner = "".join(text_of(child) for child in node.children)
        return inner if node.name in _INLINE else f" {inner} "

    parts: list[tuple[str, str, int]] = []
    loose: list[str] = []  # text directly inside containers such as <div>

    def walk(node: Tag) -> None:
        for child in node.children:
            if not isinstance(child, Tag) or child.name in _INLINE:
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
                    walk(child)

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
        pages = [page.extract_text() or "" for page in reader.pages]
    except UnsupportedContent:
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
