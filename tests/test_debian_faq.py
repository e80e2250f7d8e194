"""The second labelled set: Debian's debian-faq chapters as Markdown without their question headings, gold exact."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ragfn.ingest.chunking import ChunkingConfig, HeuristicTokenCounter, chunk_document
from ragfn.ingest.loaders import load_document
from ragfn.retrieval.debian_faq import build_debian_faq, chapter
from ragfn.retrieval.evalset import judge, load_queries

REPO = Path(__file__).resolve().parent.parent
PAGE = """<html><head><title>Chapter 3. Choosing</title></head><body><div class="chapter">
<div class="titlepage"><h1 class="title">Chapter 3. Choosing a distribution</h1></div>
<div class="toc"><p>3.1. Which one is better for me?</p></div>
<p>There are many distributions.</p>
<div class="section"><div class="titlepage"><h2 class="title">3.1. Which one is better for me?</h2></div>
<p>It depends.</p>
<div class="section"><div class="titlepage"><h3 class="title">3.1.1. How do I know which one I run?</h3></div>
<p>Read the file:</p><pre class="screen">cat /etc/debian_version
</pre><ul><li><p>stable: a number</p></li><li><p>testing: a codename</p></li></ul></div>
<div class="section"><div class="titlepage"><h3 class="title">3.1.2. Mirrors</h3></div><p>Use a near one.</p></div>
</div></div></body></html>"""


@pytest.mark.unit
def test_a_chapter_becomes_markdown_without_its_question_headings():
    text, spans = chapter(PAGE)
    assert text.startswith("# Choosing a distribution\n\nThere are many distributions.")
    assert "How do I know" not in text and text.count("Which one is better") == 1  # no table of contents
    assert "## Which one is better for me?\n\nIt depends." in text  # a section holding sections keeps its heading
    assert "### Mirrors\n\nUse a near one." in text  # so does a leaf whose title asks nothing
    assert [question for question, _ in spans] == ["How do I know which one I run?"]
    start, end = spans[0][1]
    assert text[start:end] == ("Read the file:\n\n```\ncat /etc/debian_version\n```\n\n"
                               "- stable: a number\n- testing: a codename")


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory):
    from fetch_corpus import sources_dir  # scripts/ is on sys.path (conftest)

    html = sources_dir(Path(os.environ.get("RAGFN_HOME", REPO / ".ragfn")) / "corpora", "debian-faq")
    out = tmp_path_factory.mktemp("debian-faq")
    return html, out, build_debian_faq(html, out), load_queries(out / "queries.jsonl")


@pytest.mark.integration
def test_the_debian_faq_set_is_plausible_and_its_questions_are_gone_from_the_corpus(built):
    _, out, counts, queries = built
    assert counts["files"] >= 12 and len(queries) >= 100 and counts["skipped_empty"] == 0
    corpus = {p.name: p.read_text("utf-8") for p in (out / "corpus").iterdir()}
    for query in queries:
        assert query.question.endswith("?") and not re.match(r"\d", query.question)
        text = corpus[query.source]
        assert f"{query.question}\n" not in text  # its heading was removed
        (start, end), = query.gold
        assert 0 < start < end <= len(text) and text[start:end].strip() == text[start:end]
    # its answers run longer than the Python FAQ's: the reason it is the second set
    assert sorted(end - start for q in queries for start, end in q.gold)[len(queries) // 2] > 500


@pytest.mark.integration
def test_the_debian_faq_build_is_idempotent_and_its_golds_reachable(built, tmp_path):
    html, out, counts, queries = built
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "corpus").iterdir()}
    assert build_debian_faq(html, out) == counts and {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    chunks = {p.name: chunk_document(load_document(p.read_bytes(), name=p.name), ChunkingConfig(120, 16),
                                     HeuristicTokenCounter()) for p in (out / "corpus").iterdir()}
    uri = (out / "corpus").resolve().as_uri()
    reached = [q for q in queries if any(judge(q, [{"source": f"{uri}/{q.source}", "start": c.start, "end": c.end}
                                                   for c in chunks[q.source]]))]
    assert len(reached) >= 0.95 * len(queries)
    with pytest.raises(FileNotFoundError, match="en.html"):
        build_debian_faq(tmp_path, tmp_path / "out")
