"""How an answer looks: its text, its citations as passages one click away, its badges and its timings."""

from __future__ import annotations

import re
from html import escape

import streamlit as st

from ragfn.core.uris import document_name
from ui.safe_markdown import SafeMarkdown

# What each `degraded` reason (ragfn/gateway/ask.py) means to someone reading the answer.
DEGRADED = {
    "cold-start": "model warming up: answered from the passages",
    "llm-unavailable": "model unavailable: answered from the passages",
    "llm-rejected": "model refused the request: answered from the passages",
    "ungrounded-answer": "the model's answer was not supported by the passages: answered from them instead",
    "vector-store-unavailable": "no vector store: keyword search only",
    "retrieve-unavailable": "document search unavailable",
    "cache-unavailable": "cache unavailable",
}
STAGES = {"cache": "cache", "retrieve": "retrieve", "generate": "generate", "cache_store": "cache write"}


def badges(final: dict) -> list[tuple[str, str]]:
    """(label, colour) for an answer's final record: cache hit or not, and each reason it was degraded."""
    shown = []
    if final.get("cache") == "hit":
        shown.append(("cache hit", "green"))
    elif final.get("cache") == "off":
        shown.append(("cache off", "gray"))
    for reason in filter(None, (final.get("degraded") or "").split("+")):
        shown.append((f"degraded: {DEGRADED.get(reason, reason)}", "orange"))
    if final.get("truncated"):
        shown.append(("cut off at the token limit", "gray"))
    if final.get("provider") == "fallback":
        shown.append((f"answered by the fallback model {final.get('model')}", "blue"))
    if final.get("citations_inferred"):
        shown.append(("sources matched by ragfn: the model cited none", "violet"))
    return shown


def timing_line(timings_ms: dict) -> str:
    """`cache 3 ms · retrieve 41 ms · generate 1.20 s · total 1.24 s`: where this answer's time went."""
    def fmt(ms: float) -> str:
        return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"

    parts = [f"{STAGES.get(stage, stage)} {fmt(ms)}" for stage, ms in timings_ms.items()]
    return " · ".join([*parts, f"total {fmt(sum(timings_ms.values()))}"]) if parts else ""


def plain(text: str) -> str:
    """Text for a place Streamlit reads as Markdown (labels, captions): the characters that make links, images,
    HTML, code or emphasis are escaped, so a document's or a key's name shows as written and loads nothing."""
    return re.sub(r"([\\`*_\[\]()!<>|~])", r"\\\1", text)


def render_markdown(text: str, safe: SafeMarkdown, slot=None) -> None:
    """Untrusted Markdown (a model's answer) in `slot` (or the page): see ui/safe_markdown.py. Nothing for empty
    text (st.html refuses an empty body). The HTML always starts with a tag, so st.html never takes it for a file
    path to read."""
    if text.strip():
        (slot or st).html(safe.html(text))


def render_citations(citations: list[dict], safe: SafeMarkdown) -> None:
    if not citations:
        return
    columns = st.columns(min(len(citations), 4))
    for i, citation in enumerate(citations):
        with columns[i % len(columns)].popover(f"[{citation['n']}] {plain(document_name(citation['source']))}"):
            section = (f"<br><b>Section</b> {escape(citation['heading_path'])}"
                       if citation.get("heading_path") else "")
            st.html(f"<b>Source</b> {safe.link(citation['source'])}{section}")
            st.text(citation["text"])


def render_badges(final: dict) -> None:
    shown = badges(final)
    if shown:
        columns = st.columns(len(shown))
        for column, (label, colour) in zip(columns, shown, strict=True):
            column.badge(label, color=colour)
    if final.get("timings_ms"):
        st.caption(f"⏱ {timing_line(final['timings_ms'])}")
