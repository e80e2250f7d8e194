"""A second labelled set, of another domain: the Debian GNU/Linux FAQ (Debian's `debian-faq`, DocBook HTML).

Each chapter page becomes one Markdown corpus file: the chapter title as `#`, each section that holds sections as
`##`/`###`, each section without a question title kept with its heading, and each question section (a leaf
whose title ends with "?") as its answer alone, the question heading removed, as `evalset` does with the Python
FAQ. The question, without its number ("3.1.1. "), is the query; its answer's span in the written file the gold.
Its answers run longer than the Python FAQ's and hold more lists and command lines, which is why it is here:
a retrieval default must win on both sets (docs/benchmarks.md).
"""

from __future__ import annotations

import re
from pathlib import Path

from ragfn.retrieval.evalset import write_eval_set

SUFFIX = ".md"
_NUMBER = re.compile(r"^\s*(?:Chapter\s+)?(?:\d+\.)+\s*")
_SKIP = {"index"}  # the table of contents


def _text(node) -> str:
    return " ".join(node.get_text(" ").split())


def _markdown(node) -> str:
    """A section body's blocks as Markdown: paragraphs, lists as "- item", program listings fenced."""
    from bs4.element import NavigableString, Tag

    blocks = []
    for child in node.children:
        if isinstance(child, NavigableString):
            if child.strip():
                blocks.append(" ".join(child.split()))
            continue
        if not isinstance(child, Tag) or {"titlepage", "toc"} & set(child.get("class") or []):
            continue  # the heading is written apart; a table of contents would leak every question
        if child.name == "pre":
            blocks.append("```\n" + child.get_text().strip("\n") + "\n```")
        elif child.name in ("ul", "ol"):
            blocks.append("\n".join(f"- {_text(item)}" for item in child.find_all("li", recursive=False)))
        elif child.name == "div" and "section" in (child.get("class") or []):
            continue  # a nested section is written on its own
        elif child.name in ("div", "dl", "blockquote") and child.find(["p", "pre", "ul", "ol"]):
            blocks.append(_markdown(child))
        elif text := _text(child):
            blocks.append(text)
    return "\n\n".join(block for block in blocks if block)


def chapter(markup: str) -> tuple[str, list[tuple[str, tuple[int, int]]]]:
    """One chapter page as (Markdown text, [(question, span of its answer in that text)])."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(markup, "html.parser")
    title = soup.select_one("div.chapter .titlepage .title") or soup.find("title")
    parts, spans, size = [], [], 0

    def add(block: str) -> tuple[int, int]:
        nonlocal size
        start = size + (2 if parts else 0)
        parts.append(block)
        size = start + len(block)
        return start, size

    add(f"# {_NUMBER.sub('', _text(title))}" if title else "# Debian FAQ")
    if intro := _markdown(soup.select_one("div.chapter") or soup.body or soup):
        add(intro)
    for section in soup.select("div.section"):
        heading = section.select_one(".titlepage .title")
        name = _NUMBER.sub("", _text(heading)) if heading else ""
        depth = 2 + sum(1 for parent in section.parents if "section" in (parent.get("class") or []))
        leaf = section.select_one("div.section") is None
        body = _markdown(section)
        if leaf and name.endswith("?") and body:
            spans.append((name, add(body)))
            continue
        if name:
            add(f"{'#' * min(depth, 6)} {name}")
        if body:
            add(body)
    return "\n\n".join(parts) + "\n", spans


def build_debian_faq(html_dir: Path, out_dir: Path) -> dict[str, int]:
    """`out_dir/corpus/*.md` and `out_dir/queries.jsonl` from the FAQ's `*.en.html` chapters in `html_dir`."""
    pages = sorted(p for p in Path(html_dir).glob("*.en.html") if p.name.split(".")[0] not in _SKIP)
    if not pages:
        raise FileNotFoundError(f"no *.en.html chapters in {html_dir}")
    files = {f"{page.name.split('.')[0]}{SUFFIX}": chapter(page.read_text("utf-8")) for page in pages}
    return write_eval_set(out_dir, files, SUFFIX)
