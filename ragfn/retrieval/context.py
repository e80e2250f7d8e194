"""Context for the LLM: retrieved passages in rank order, numbered for `[n]` citations, within a token budget."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ragfn.core.uris import document_name
from ragfn.retrieval.dense import Hit

HEADER_TOKENS = 12  # "[n] source › heading" line in front of each passage


@dataclass(frozen=True)
class Passage:
    number: int  # the n of a [n] citation
    chunk_id: str
    source: str
    heading_path: str
    start: int
    end: int
    text: str
    score: float

    def to_json(self) -> dict:
        return self.__dict__.copy()


def assemble_context(hits: list[Hit], budget_tokens: int) -> list[Passage]:
    """Best hits first while they fit; a chunk already covered by a chosen passage of the same source is skipped,
    so overlap between neighbouring chunks is not paid for twice."""
    chosen: list[Passage] = []
    used = 0
    for hit in hits:
        meta = hit.metadata
        start, end = int(meta.get("start", 0)), int(meta.get("end", 0))
        if any(p.source == hit.source and p.start <= start and end <= p.end for p in chosen):
            continue
        cost = int(meta.get("tokens", len(hit.text) // 3)) + HEADER_TOKENS
        if used + cost > budget_tokens:
            continue  # a shorter, lower-ranked passage may still fit
        chosen.append(Passage(len(chosen) + 1, hit.chunk_id, hit.source, meta.get("heading_path", ""), start, end,
                              hit.text, hit.score))
        used += cost
    return chosen


_HEADER_LIKE = re.compile(r"^(\s*)\[(\d+)\]", re.MULTILINE)


def render(passages: list[Passage], *, full_sources: bool = False) -> str:
    """The numbered passages as the prompt shows them: each under its document's name, or its whole URI.

    Only these headers open a passage: a header is one line, and a line of a passage's text that would read as one
    ("[2] payroll.md", planted to make the model take the text for another passage) has its number written (2)."""
    blocks = []
    for passage in passages:
        source = passage.source if full_sources else document_name(passage.source)
        where = " ".join(f"{source} › {passage.heading_path}".split() if passage.heading_path else source.split())
        text = _HEADER_LIKE.sub(r"\1(\2)", passage.text)
        blocks.append(f"[{passage.number}] {where}\n{text}")
    return "\n\n".join(blocks)
