"""A line-based reStructuredText block scanner: section titles, paragraphs, literal blocks and directives."""

from __future__ import annotations

import re
import unicodedata

from ragfn.ingest.blocks import Block, Blocks, line_starts

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


def rst_blocks(text: str) -> list[Block]:
    """The structural blocks of reStructuredText `text`, with offsets into it."""
    scanner = _Rst(text)
    scanner.scan(0, len(scanner.lines), top=True)
    return scanner.out


class _Rst:
    """A line-based reStructuredText block scanner. docutils reports no character offsets and fails on Sphinx's
    directives and roles, so we recognise just the block structure chunking needs: section titles (levels in
    order of first appearance of each adornment style, like docutils), paragraphs, `::` literal blocks,
    directives (code-like ones are code, others are scanned as nested content), block quotes and transitions."""

    def __init__(self, text: str) -> None:
        self.lines, self.starts, self.out = text.split("\n"), line_starts(text), Blocks(text)
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
