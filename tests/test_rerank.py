"""The optional reranker: off by default, reorders only chunks the caller may read, and a broken model is skipped."""

from __future__ import annotations

import logging

import pytest

from ragfn.ingest.walk import ingest
from ragfn.retrieval.dense import Caller, DenseRetriever
from ragfn.retrieval.hybrid import HybridRetriever
from ragfn.retrieval.lexical import LexicalRetriever
from ragfn.retrieval.rerank import CrossEncoderReranker
from ragfn.serve.runtime import Runtime

pytestmark = pytest.mark.integration

DOCS = {
    "sorting.md": "# Sorting\n\nUse sorted(d.items(), key=lambda kv: kv[1]) to sort a dict by value.\n",
    "lists.md": "# Lists\n\nlist.sort() sorts a list in place; sorted() returns a new sorted list.\n",
    "secret.md": "# Payroll\n\nThe payroll table is sorted by salary and only finance may read it.\n",
}


class KeywordReranker:
    """A stand-in for a cross-encoder, whose weights cannot be had offline here: it scores a passage by whether it
    holds a marker word, so a test can tell a reranked order from the retrieval order."""

    name = "keyword-stand-in"

    def __init__(self, marker: str) -> None:
        self.marker, self.seen = marker, []

    def scores(self, question, passages):
        self.seen.extend(passages)
        return [1.0 if self.marker in passage else 0.0 for passage in passages]


@pytest.fixture
def runtime(index_settings, unique_collection, tmp_path):
    runtime = Runtime(index_settings)
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text)
        ingest([str(tmp_path / name)], runtime, collection=unique_collection, tenant="acme",
               groups=("finance",) if name == "secret.md" else ())
    return runtime


def _retriever(runtime, reranker):
    return HybridRetriever(DenseRetriever(runtime.index, runtime.embedder), LexicalRetriever(runtime.index),
                           reranker=reranker)


def test_off_by_default(index_settings):
    assert Runtime(index_settings).retriever.reranker is None


def test_the_reranker_orders_the_results_and_sees_only_readable_chunks(runtime, unique_collection):
    question = "how do I sort a dict by value"
    plain = _retriever(runtime, None).search(question, collection=unique_collection, caller=Caller("acme"))
    assert plain[0].source.endswith("sorting.md")
    reranker = KeywordReranker("in place")
    hits = _retriever(runtime, reranker).search(question, collection=unique_collection, top_k=2,
                                                caller=Caller("acme"))
    assert hits[0].source.endswith("lists.md") and hits[0].score == 1.0
    assert len(hits) == 2
    assert reranker.seen and not any("payroll" in passage for passage in reranker.seen)


def test_a_model_that_cannot_load_is_reported_once_and_skipped(runtime, unique_collection, tmp_path, caplog):
    broken = CrossEncoderReranker("Xenova/ms-marco-MiniLM-L-6-v2", model_path=str(tmp_path / "no-such-model"))
    retriever = _retriever(runtime, broken)
    expected = [h.chunk_id for h in _retriever(runtime, None).search("sort a list", collection=unique_collection,
                                                                      caller=Caller("acme"))]
    with caplog.at_level(logging.ERROR, logger="ragfn.rerank"):
        for _ in range(2):
            hits = retriever.search("sort a list", collection=unique_collection, caller=Caller("acme"))
            assert [h.chunk_id for h in hits] == expected
    errors = [r for r in caplog.records if r.name == "ragfn.rerank"]
    assert len(errors) == 1 and "RAGFN_RERANK_MODEL" in errors[0].getMessage()


def test_settings_configure_it(index_settings):
    settings = index_settings.model_copy(update={"rerank_model": "Xenova/ms-marco-MiniLM-L-6-v2", "rerank_depth": 12})
    retriever = Runtime(settings).retriever
    assert retriever.reranker.name == "Xenova/ms-marco-MiniLM-L-6-v2" and retriever.rerank_depth == 12
