"""Structural blocks of a loaded document, and the helpers every format's block scanner shares."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Literal


@dataclass(frozen=True)
class Block:
    """One structural unit: text/code blocks have `text == doc.text[start:end]`; a heading's text is its clean title."""

    kind: Literal["heading", "text", "code", "break"]  # break: a thematic break or page break (may be zero-width)
    start: int
    end: int
    text: str
    level: int = 0  # heading level, 1 = top


class Blocks(list[Block]):
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


def line_starts(text: str) -> list[int]:
    """starts[i] is the offset of line i; one extra entry past the end makes `starts[j] - 1` the end of line j - 1."""
    return [0, *accumulate(len(line) + 1 for line in text.split("\n"))]
