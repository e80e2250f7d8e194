"""The FAQ evaluation set: question headings removed, gold spans exact, output deterministic; relevance judging."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ragfn.ingest.chunking import ChunkingConfig, HeuristicTokenCounter, chunk_document
from ragfn.ingest.loaders import load_document
from ragfn.retrieval.evalset import (
    EvalQuery,
    build_eval_set,
    is_relevant,
    judge,
    load_queries,
    strip_questions,
)

REPO = Path(__file__).resolve().parent.parent
_ADORN = re.compile(r"([!-/:-@\[-`{-~])\1+[ \t]*\Z")
_TARGET = re.compile(r"\.\. _[^\n]*:\s*\Z")


def raw_headings(text: str) -> list[tuple[int, int, str]]:
    """(first line, line after the heading, title line) of every section title: written independently of
    ragfn.ingest.rst, by the plain rule "a non-blank line over a repeated-punctuation line at least as long"."""
    lines, found = text.split("\n"), []
    for i in range(len(lines) - 1):
        title, under = lines[i], lines[i + 1]
        over = i > 0 and lines[i - 1].rstrip() == under.rstrip()
        if title.strip() and not _ADORN.match(title) and _ADORN.match(under) \
                and len(under.rstrip()) >= len(title.rstrip()) and (over or not title[0].isspace()):
            found.append((i - 1 if over else i, i + 2, title.strip()))
    return found


def unwrap(title: str) -> str:
    title = re.sub(r"(?::\w+)+:`([^`<]*?)\s*(?:<[^`]*>)?`", r"\1", title)
    return re.sub(r"\*(\w+)\*", r"\1", title.replace("``", ""))


def body_after(text: str, headings: list[tuple[int, int, str]], n: int) -> str:
    """The section body under heading n: its lines up to the next heading, trimmed, trailing `.. _x:` dropped."""
    lines = text.split("\n")
    stop = headings[n + 1][0] if n + 1 < len(headings) else len(lines)
    body = lines[headings[n][1]:stop]
    while body and (not body[-1].strip() or _TARGET.match(body[-1].strip())):
        body.pop()
    return "\n".join(body).strip()


@pytest.fixture(scope="session")
def faq_dir() -> Path:
    from fetch_corpus import sources_dir  # scripts/ is on sys.path (conftest)

    return sources_dir(Path(os.environ.get("RAGFN_HOME", REPO / ".ragfn")) / "corpora") / "faq"


@pytest.fixture(scope="session")
def built(faq_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[EvalQuery]]:
    out = tmp_path_factory.mktemp("eval")
    counts = build_eval_set(faq_dir, out)
    return out, counts, load_queries(out / "queries.jsonl")


@pytest.mark.integration
def test_counts_are_plausible(built) -> None:
    out, counts, queries = built
    assert counts["files"] == 8  # every FAQ file except index.rst.txt, a bare toctree
    assert sorted(p.name for p in (out / "corpus").iterdir()) == sorted({q.source for q in queries})
    assert counts["queries"] == len(queries) > 150  # the Python 3.11 FAQ has 179 questions
    assert counts["questions"] == counts["queries"] + counts["skipped_empty"]
    assert len({q.id for q in queries}) == len(queries)
    per_file = {source: sum(q.source == source for q in queries) for source in {q.source for q in queries}}
    assert per_file["programming.rst.txt"] > 50 and min(per_file.values()) >= 3
    questions = {q.question for q in queries}
    assert {"Why does the result of id() appear to be not unique?", "Is a *.pyd file the same as a DLL?",
            "How do you remove multiple items from a list",  # a question without "?" at the deepest level
            "What GUI toolkits exist for Python?",  # a question adorned like a chapter title
            "When can I rely on identity tests with the is operator?"} <= questions
    assert not any("`" in q or re.search(r":\w+:", q) for q in questions)  # roles and literals unwrapped


@pytest.mark.integration
def test_corpus_is_the_original_minus_question_headings(built, faq_dir: Path) -> None:
    out, _, queries = built
    for path in sorted((out / "corpus").iterdir()):
        original, corpus = (faq_dir / path.name).read_text(), path.read_text()
        asked = [unwrap(q.question) for q in queries if q.source == path.name]
        headings = raw_headings(original)
        removed = [h for h in headings if " ".join(unwrap(h[2]).split()) in asked]
        assert len(removed) == len(asked)
        kept_titles = [h[2] for h in headings if h not in removed]
        assert [h[2] for h in raw_headings(corpus)] == kept_titles  # chapter titles stay, in order
        assert not any(title.endswith("?") for title in kept_titles if title != kept_titles[0])
        lines = original.split("\n")
        cut = {i for first, after, _ in removed for i in range(first, after)}
        assert corpus == "\n".join(line for i, line in enumerate(lines) if i not in cut)
    gui = (out / "corpus" / "gui.rst.txt").read_text()
    assert "General GUI Questions\n=====" in gui and "Tkinter questions\n=====" in gui


@pytest.mark.integration
def test_gold_spans_are_the_section_bodies(built, faq_dir: Path) -> None:
    out, _, queries = built
    for source in sorted({q.source for q in queries}):
        original, corpus = (faq_dir / source).read_text(), (out / "corpus" / source).read_text()
        assert load_document(corpus.encode(), name=source).text == corpus  # chunk offsets use the same text
        headings = raw_headings(original)
        ends = 0
        for query in (q for q in queries if q.source == source):
            [(start, end)] = query.gold
            assert ends <= start < end <= len(corpus)  # in order, disjoint, inside the file
            ends = end
            gold = corpus[start:end]
            assert gold == gold.strip() and gold
            n = next(n for n, h in enumerate(headings) if " ".join(unwrap(h[2]).split()) == query.question)
            assert gold == body_after(original, headings, n), query.id


@pytest.mark.integration
def test_build_is_deterministic_and_idempotent(built, faq_dir: Path, tmp_path: Path) -> None:
    out, counts, _ = built
    assert build_eval_set(faq_dir, tmp_path) == counts
    for name in ["queries.jsonl", *(f"corpus/{p.name}" for p in (out / "corpus").iterdir())]:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "corpus").iterdir()}
    (tmp_path / "corpus" / "gone.rst.txt").write_text("from an older build\n")
    assert build_eval_set(faq_dir, tmp_path) == counts
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "corpus").iterdir()} == before  # untouched, stale gone


@pytest.mark.integration
def test_most_golds_are_reachable_by_real_chunks(built) -> None:
    out, _, queries = built
    chunks = {p.name: chunk_document(load_document(p.read_bytes(), name=p.name), ChunkingConfig(120, 16),
                                     HeuristicTokenCounter()) for p in (out / "corpus").iterdir()}
    uri = (out / "corpus").resolve().as_uri()
    reached = [q for q in queries if any(judge(q, [{"source": f"{uri}/{q.source}", "start": c.start, "end": c.end}
                                                   for c in chunks[q.source]]))]
    assert len(reached) >= 0.9 * len(queries)  # very short answers packed with their neighbours are not


@pytest.mark.unit
def test_strip_questions_on_a_small_faq() -> None:
    text = ("=====\nA FAQ\n=====\n\nEmpty chapter\n=============\n\nOdd one?\n========\n\nAdorned like a chapter.\n\n"
            "Chapter\n=======\n\n.. _q1:\n\nWhat is :func:`sorted`?\n----------------------\n\nIt sorts.\n\n.. _q2:\n\n"
            "How do I *really* go\n--------------------\n\nSlowly::\n\n   go()\n\nEmpty one?\n----------\n\n"
            "Next chapter\n============\n\nIntro.\n\nLast?\n-----\n\nThe end.\n")
    corpus, spans = strip_questions(text)
    assert [(q.title, corpus[s:e]) for q, (s, e) in spans] == [
        ("Odd one?", "Adorned like a chapter."), ("What is sorted?", "It sorts."),
        ("How do I really go", "Slowly::\n\n   go()"), ("Empty one?", ""), ("Last?", "The end.")]
    for kept in ("=====\nA FAQ\n=====", "Empty chapter\n=====", "Chapter\n=====", "Next chapter\n=====", ".. _q2:"):
        assert kept in corpus
    assert "?\n---" not in corpus and "Odd one" not in corpus and "really" not in corpus
    assert corpus.count("\n") == text.count("\n") - 2 * len(spans)  # exactly the title and underline lines


@pytest.mark.unit
def test_relevance_needs_half_of_the_chunk_inside_the_gold() -> None:
    query = EvalQuery("faq-001", "Why?", "faq.rst.txt", ((100, 200),))
    assert is_relevant(query, "faq.rst.txt", 120, 180)  # wholly inside
    assert is_relevant(query, "file:///tmp/corpus/faq.rst.txt", 50, 150)  # exactly half
    assert not is_relevant(query, "faq.rst.txt", 40, 150)  # 50 of 110 characters
    assert not is_relevant(query, "faq.rst.txt", 0, 400)  # covers the gold, but is mostly something else
    assert not is_relevant(query, "other.rst.txt", 120, 180)
    assert not is_relevant(query, "faq.rst.txt", 150, 150)
    assert judge(query, [{"source": "s3://b/faq.rst.txt", "start": 0, "end": 90},
                         {"source": "s3://b/faq.rst.txt", "start": 110, "end": 190}]) == [False, True]
    assert EvalQuery.from_json(query.to_json()) == query
