"""Section-level and neighbour-window (small-to-big) hybrid ranking against real Chroma and the offline MiniLM model."""

from __future__ import annotations

import pytest

from ragfn.core.errors import BadEvent
from ragfn.ingest.walk import ingest
from ragfn.retrieval.dense import Caller, DenseRetriever, Hit
from ragfn.retrieval.hybrid import HybridRetriever
from ragfn.retrieval.lexical import LexicalRetriever
from ragfn.retrieval.sections import section_of
from ragfn.retrieval.window import windowed
from ragfn.serve.runtime import Runtime

pytestmark = pytest.mark.integration

# 40-token chunks: each paragraph below is a chunk of its own, so "Packing" has two chunks and "Shipping" one.
GUIDE = """# Release guide

## Packing

To build the release archive, run make dist in the source tree; it writes a compressed tarball of every tracked
file into the dist folder, ready to upload.

Building the release archive also signs it: gpg writes a detached signature for the archive next to the tarball
in the dist folder.

## Shipping

How do I build the release archive? Build it and upload it to the download server.

## Holidays

The office is closed in August; requests for leave go to the team lead two weeks ahead of time.

## Canteen

The canteen serves soup on Mondays and fish on Fridays; vegetarian dishes are available every day.
"""
SECRET = """# Budget

## Archive budget

How do I build the release archive budget? Build the release archive budget from the QX-7731 ledger.
"""
QUESTION = "How do I build the release archive?"


@pytest.fixture
def runtime(settings, tmp_path):
    runtime = Runtime(settings.model_copy(update={"chunk_tokens": 40, "chunk_overlap_tokens": 0}))
    for name, text, tenant, groups in [("guide.md", GUIDE, "acme", ()), ("secret.md", SECRET, "acme", ("finance",)),
                                       ("other.md", GUIDE, "globex", ())]:
        (tmp_path / name).write_text(text)
        ingest([str(tmp_path / name)], runtime, tenant=tenant, groups=groups)
    return runtime


def retriever(runtime, sections: str) -> HybridRetriever:
    return HybridRetriever(DenseRetriever(runtime.index, runtime.embedder),
                           LexicalRetriever(runtime.index, refresh_seconds=0.0), sections=sections)


def heading(hit) -> str:
    return hit.metadata["heading_path"].rsplit(" > ", 1)[-1]


def test_two_good_chunks_lift_their_section_above_one_slightly_better_chunk(runtime):
    caller = Caller("acme")
    chunks = retriever(runtime, "off").search(QUESTION, caller=caller)
    # The premise, from the real model: Shipping's single chunk (the question's own words) ranks first, and both
    # Packing chunks come right after it, ahead of anything else.
    assert [heading(h) for h in chunks[:3]] == ["Shipping", "Packing", "Packing"]
    assert len({h.chunk_id for h in chunks}) == len(chunks)
    # max: the best chunk decides, so Shipping stays first; Packing's second chunk waits behind every other section
    by_max = retriever(runtime, "max").search(QUESTION, caller=caller)
    assert [heading(h) for h in by_max[:2]] == ["Shipping", "Packing"]
    assert [heading(h) for h in by_max].index("Packing") == 1 and heading(by_max[-1]) == "Packing"
    # sum: two good chunks beat one slightly better one; the section is represented by its better chunk
    by_sum = retriever(runtime, "sum").search(QUESTION, caller=caller)
    assert [heading(h) for h in by_sum[:2]] == ["Packing", "Shipping"]
    assert by_sum[0].chunk_id == chunks[1].chunk_id
    # Same chunks and scores (each chunk keeps its fused score), only the order changes.
    for ranked in (by_max, by_sum):
        assert sorted((h.chunk_id, h.score) for h in ranked) == sorted((h.chunk_id, h.score) for h in chunks)


@pytest.mark.parametrize("sections", ["max", "sum", "fuse"])
def test_sections_come_first_filters_apply_and_top_k_holds(runtime, sections):
    search = retriever(runtime, sections).search
    for caller in (Caller("acme"), Caller("acme", ("finance",)), Caller("globex")):
        hits = search(QUESTION, caller=caller, top_k=10)
        # every chunk the caller may read, and nothing else
        assert hits and all(caller.can_read(h.metadata) for h in hits)
        # every section's best chunk comes before any section's second chunk
        order = [section_of(h) for h in hits]
        firsts = [n for n, key in enumerate(order) if order.index(key) == n]
        assert firsts == list(range(len(firsts))) and len(firsts) == len(set(order))
        for top_k in (1, 2, 3):
            assert [h.chunk_id for h in search(QUESTION, caller=caller, top_k=top_k)] == [
                h.chunk_id for h in hits[:top_k]]
    plain = {h.source.rsplit("/", 1)[-1] for h in search(QUESTION, caller=Caller("acme"))}
    assert plain == {"guide.md"}  # neither the finance-only section nor the other tenant's copy
    finance = search(QUESTION, caller=Caller("acme", ("finance",)))
    assert "Archive budget" in {heading(h) for h in finance}
    assert {h.source.rsplit("/", 1)[-1] for h in search(QUESTION, caller=Caller("globex"))} == {"other.md"}


def test_unknown_section_ranking_is_refused(runtime):
    with pytest.raises(BadEvent):
        retriever(runtime, "mean")


# 40-token chunks, numbered in order: Holidays 0, Shipping 1, Canteen 2, Packing 3 and 4, Parking 5. Shipping's one
# chunk matches the question a little better than either Packing chunk, but its neighbours are off topic; the two
# Packing chunks are neighbours of each other.
WINDOW_GUIDE = """# Release guide

## Holidays

The office is closed in August; requests for leave go to the team lead two weeks ahead of time.

## Shipping

The release archive is built by the build server and uploaded to the download server every night.

## Canteen

The canteen serves soup on Mondays and fish on Fridays; vegetarian dishes are available every day.

## Packing

To build the release archive, run make dist in the source tree; it writes a compressed tarball of every tracked
file into the dist folder, ready to upload.

Building the release archive also signs it: gpg writes a detached signature for the archive next to the tarball
in the dist folder.

## Parking

Staff park in the east lot; visitors get a day pass from reception and park in the marked bays by the gate.
"""


@pytest.fixture
def window_runtime(settings, tmp_path):
    runtime = Runtime(settings.model_copy(update={"chunk_tokens": 40, "chunk_overlap_tokens": 0}))
    for name, text, tenant, groups in [("guide.md", WINDOW_GUIDE, "acme", ()),
                                       ("secret.md", SECRET, "acme", ("finance",)),
                                       ("other.md", WINDOW_GUIDE, "globex", ())]:
        (tmp_path / name).write_text(text)
        ingest([str(tmp_path / name)], runtime, tenant=tenant, groups=groups)
    return runtime


def windowed_retriever(runtime, window: float, pool: str = "max") -> HybridRetriever:
    return HybridRetriever(DenseRetriever(runtime.index, runtime.embedder),
                           LexicalRetriever(runtime.index, refresh_seconds=0.0), window=window, window_pool=pool)


def test_a_chunk_with_a_matching_neighbour_rises_above_an_isolated_slightly_better_chunk(window_runtime):
    caller = Caller("acme")
    plain = windowed_retriever(window_runtime, 0.0).search(QUESTION, caller=caller)
    # The premise, from the real model: the isolated Shipping chunk scores best on its own, both Packing chunks next
    assert [heading(h) for h in plain[:3]] == ["Shipping", "Packing", "Packing"]
    assert [h.metadata["number"] for h in plain[:3]] == [1, 3, 4]
    by_window = windowed_retriever(window_runtime, 0.5).search(QUESTION, caller=caller)
    # each Packing chunk counts half of the other's score; Shipping's neighbours (Holidays, Canteen) add little
    assert [heading(h) for h in by_window[:3]] == ["Packing", "Packing", "Shipping"]
    assert {h.chunk_id for h in by_window} == {h.chunk_id for h in plain}
    assert [h.score for h in by_window] == sorted((h.score for h in by_window), reverse=True)
    # the returned score is the windowed one: own fused score plus beta times the better neighbour's
    fused = {h.chunk_id: h.score for h in plain}
    first, second = (next(h for h in plain if h.metadata["number"] == n) for n in (3, 4))
    top = next(h for h in by_window if h.chunk_id == first.chunk_id)
    assert top.score == pytest.approx(fused[first.chunk_id] + 0.5 * max(fused[second.chunk_id],
                                                                        fused[next(h.chunk_id for h in plain
                                                                                   if h.metadata["number"] == 2)]))


def test_window_filters_apply_and_top_k_holds(window_runtime):
    search = windowed_retriever(window_runtime, 0.5).search
    for caller in (Caller("acme"), Caller("acme", ("finance",)), Caller("globex")):
        hits = search(QUESTION, caller=caller, top_k=10)
        assert hits and all(caller.can_read(h.metadata) for h in hits)
        for top_k in (1, 2, 3):
            assert [h.chunk_id for h in search(QUESTION, caller=caller, top_k=top_k)] == [
                h.chunk_id for h in hits[:top_k]]
    # neither the finance-only document nor the other tenant's copy (same text, same chunk numbers) reaches acme
    assert {h.source.rsplit("/", 1)[-1] for h in search(QUESTION, caller=Caller("acme"))} == {"guide.md"}
    assert "Archive budget" in {heading(h) for h in search(QUESTION, caller=Caller("acme", ("finance",)))}
    assert {h.source.rsplit("/", 1)[-1] for h in search(QUESTION, caller=Caller("globex"))} == {"other.md"}


def test_window_neighbours_are_adjacent_chunks_of_the_same_document_version():
    def hit(chunk_id, doc, number, version="v1"):
        return Hit(chunk_id, doc, "", 0.0, {"document_id": doc, "version": version, "number": number})

    hits = {h.chunk_id: h for h in [hit("a0", "a", 0), hit("a1", "a", 1), hit("a3", "a", 3), hit("b2", "b", 2),
                                     hit("a2-old", "a", 2, version="v0")]}
    scores = {"a0": 1.0, "a1": 3.0, "a3": 2.0, "b2": 5.0, "a2-old": 4.0}
    out = windowed(scores, hits, 0.5)
    # a1's neighbours: a0 (1.0) and a2 (not a candidate in this version: the floor, 1.0); b2 and a2-old don't count
    assert out["a1"] == pytest.approx(3.0 + 0.5 * 1.0)
    assert out["a0"] == pytest.approx(1.0 + 0.5 * 3.0)
    assert out["a3"] == pytest.approx(2.0 + 0.5 * 1.0)
    assert windowed(scores, hits, 0.5, "mean")["a0"] == pytest.approx(1.0 + 0.5 * (3.0 + 1.0) / 2)
    assert windowed(scores, hits, 0.0) == scores


def test_bad_window_is_refused(window_runtime):
    with pytest.raises(BadEvent):
        windowed_retriever(window_runtime, 0.5, "median")
    with pytest.raises(BadEvent):
        windowed_retriever(window_runtime, -0.5)


def test_the_settings_choose_the_ranking_every_retriever_is_built_with(settings, monkeypatch):
    from ragfn.core.config import load_settings
    from ragfn.core.errors import ConfigError

    chosen = Runtime(settings.model_copy(update={"retrieval_sections": "fuse", "retrieval_window": 0.5,
                                                 "retrieval_window_pool": "mean"})).retriever
    assert (chosen.sections, chosen.window, chosen.window_pool) == ("fuse", 0.5, "mean")
    assert (Runtime(settings).retriever.sections, Runtime(settings).retriever.window) == ("off", 0.0)
    for name, value in (("RAGFN_RETRIEVAL_SECTIONS", "chapters"), ("RAGFN_RETRIEVAL_WINDOW", "-1")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=name.removeprefix("RAGFN_").lower()):
            load_settings()
        monkeypatch.delenv(name)
