"""BM25 and hybrid retrieval against real Chroma: filters inside the ranking, freshness after updates and deletes."""

from __future__ import annotations

import time

import pytest

from ragfn.core.errors import BadEvent
from ragfn.ingest.walk import ingest
from ragfn.retrieval.dense import Caller, DenseRetriever
from ragfn.retrieval.hybrid import HybridRetriever
from ragfn.retrieval.lexical import LexicalRetriever, query_terms, tokenize
from ragfn.serve.runtime import Runtime

pytestmark = pytest.mark.integration

DOCS = {
    "zipfile.md": "# zipfile\n\nThe zipfile module reads and writes ZIP archives. Use ZipFile.extractall to unpack.\n",
    "json.md": "# json\n\nThe json module encodes and decodes JSON. Call json.dumps with indent=2 for pretty output.\n",
    "secret.md": "# Budget\n\nThe zipfile budget code is QX-7731 and only finance may read it.\n",
}


@pytest.fixture
def setup(index_settings, unique_collection, tmp_path):
    runtime = Runtime(index_settings)
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text)
        groups = ("finance",) if name == "secret.md" else ()
        ingest([str(tmp_path / name)], runtime, collection=unique_collection, tenant="acme", groups=groups)
    lexical = LexicalRetriever(runtime.index, refresh_seconds=0.0)
    return runtime, lexical, unique_collection, tmp_path


def test_bm25_ranks_exact_terms_and_filters_before_ranking(setup):
    runtime, lexical, collection, root = setup
    hits = lexical.search("extractall zipfile", collection=collection, caller=Caller("acme"))
    assert [h.source.rsplit("/", 1)[-1] for h in hits] == ["zipfile.md"]  # secret.md mentions zipfile too
    finance = lexical.search("extractall zipfile", collection=collection, caller=Caller("acme", ("finance",)))
    assert {h.source.rsplit("/", 1)[-1] for h in finance} == {"zipfile.md", "secret.md"}
    assert lexical.search("QX 7731", collection=collection, caller=Caller("acme")) == []
    assert lexical.search("json dumps", collection=collection, caller=Caller("globex")) == []
    assert tokenize("ZipFile.extractall(path)") == ["zipfil", "extractal", "path"]


def test_stems_match_inflections_and_function_words_do_not_count(setup):
    runtime, lexical, collection, root = setup
    # "encoding" and "decoded" find the json document's "encodes and decodes"; "How do I" adds nothing.
    hits = lexical.search("How do I get encoding and decoded output?", collection=collection, caller=Caller("acme"))
    assert hits[0].source.endswith("json.md")
    assert query_terms("How do I unpack the archives?") == ["unpack", "archiv"]
    # a question made only of stopwords still searches (with them), instead of being refused
    assert query_terms("What is it?") == ["what", "is", "it"]
    assert lexical.search("Which is the one?", collection=collection, caller=Caller("acme")) is not None


def test_updates_and_deletes_show_up_after_the_generation_changes(setup):
    runtime, lexical, collection, root = setup
    assert lexical.search("pretty", collection=collection, caller=Caller("acme"))
    (root / "json.md").write_text("# json\n\nThe json module now documents orjson compatibility.\n")
    ingest([str(root / "json.md")], runtime, collection=collection, tenant="acme")
    assert lexical.search("pretty", collection=collection, caller=Caller("acme")) == []
    assert lexical.search("orjson", collection=collection, caller=Caller("acme"))
    (root / "json.md").unlink()
    ingest([str(root)], runtime, collection=collection, tenant="acme", prune=True)
    assert lexical.search("orjson", collection=collection, caller=Caller("acme")) == []


def test_a_second_replica_sees_what_the_first_wrote(setup, index_settings):
    runtime, _, collection, root = setup
    replica = LexicalRetriever(Runtime(index_settings).index, refresh_seconds=0.2)
    assert replica.search("orjson", collection=collection, caller=Caller("acme")) == []
    (root / "new.md").write_text("# new\n\norjson is fast.\n")
    ingest([str(root / "new.md")], runtime, collection=collection, tenant="acme")
    time.sleep(0.25)
    assert [h.source.rsplit("/", 1)[-1] for h in replica.search("orjson", collection=collection,
                                                                caller=Caller("acme"))] == ["new.md"]


def test_hybrid_fuses_both_lists_and_respects_filters(setup):
    runtime, lexical, collection, _ = setup
    hybrid = HybridRetriever(DenseRetriever(runtime.index, runtime.embedder), lexical)
    for mode in ("dense", "lexical", "hybrid"):
        hits = hybrid.search("how do I unpack a zip archive", mode=mode, collection=collection, top_k=5,
                             caller=Caller("acme"))
        assert hits[0].source.endswith("zipfile.md"), mode
        assert not any(h.source.endswith("secret.md") for h in hits)
    with pytest.raises(BadEvent, match="mode"):
        hybrid.search("x", mode="sparse", collection=collection)
    with pytest.raises(BadEvent, match="no words"):
        lexical.search("?!", collection=collection)


@pytest.mark.parametrize("fusion", ["scores", "rrf"])
def test_each_fusion_promotes_a_chunk_both_lists_agree_on(setup, fusion):
    runtime, lexical, collection, _ = setup
    hybrid = HybridRetriever(DenseRetriever(runtime.index, runtime.embedder), lexical, fusion=fusion)
    hits = hybrid.search("json dumps indent", collection=collection, top_k=3, caller=Caller("acme"))
    assert hits[0].source.endswith("json.md")
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # with the lexical weight at 0 the fused order is the dense order
    dense_only = HybridRetriever(DenseRetriever(runtime.index, runtime.embedder), lexical, fusion=fusion,
                                 lexical_weight=0.0)
    question = "what reads compressed archives"
    assert [h.chunk_id for h in dense_only.search(question, collection=collection, caller=Caller("acme"))][:2] == \
        [h.chunk_id for h in dense_only.dense.search(question, collection=collection, caller=Caller("acme"))][:2]


def test_an_unknown_fusion_is_refused(setup):
    runtime, lexical, _, _ = setup
    with pytest.raises(BadEvent, match="fusion"):
        HybridRetriever(DenseRetriever(runtime.index, runtime.embedder), lexical, fusion="max")


def test_a_failing_store_is_not_asked_again_on_every_query(index_settings):
    from ragfn.core.errors import Unavailable

    runtime = Runtime(index_settings.model_copy(update={"chroma_url": "http://127.0.0.1:9"}))  # nothing listens
    lexical = LexicalRetriever(runtime.index)
    asked = []
    exists = runtime.index.exists
    runtime.index.exists = lambda collection: asked.append(collection) or exists(collection)
    for _ in range(3):
        with pytest.raises(Unavailable, match="lexical search"):
            lexical.search("anything", collection="docs")
    assert asked == ["docs"]  # then the remembered failure answers until retry_seconds have passed
    lexical.retry_seconds = 0.0
    with pytest.raises(Unavailable):
        lexical.search("anything", collection="docs")
    assert asked == ["docs", "docs"]


def test_a_slow_snapshot_is_rebuilt_in_the_background_while_the_old_one_answers(setup):
    runtime, lexical, collection, root = setup
    lexical.refresh_seconds = 0.0
    assert lexical.search("pretty", collection=collection, caller=Caller("acme"))
    lexical.background_after_seconds = -1.0  # treat every build as slow
    (root / "json.md").write_text("# json\n\nThe json module now documents orjson compatibility.\n")
    ingest([str(root / "json.md")], runtime, collection=collection, tenant="acme")
    # the first query after the commit is answered at once from the old snapshot ...
    assert lexical.search("pretty", collection=collection, caller=Caller("acme"))
    # ... and the new one takes over when its background build is done
    deadline = time.monotonic() + 30
    while not lexical.search("orjson", collection=collection, caller=Caller("acme")):
        assert time.monotonic() < deadline, "the background rebuild never landed"
        time.sleep(0.05)
    assert lexical.search("pretty", collection=collection, caller=Caller("acme")) == []


def test_slow_rebuilds_are_spaced_to_their_share_of_a_core(setup):
    runtime, lexical, collection, root = setup
    lexical.refresh_seconds = 0.0
    lexical.background_after_seconds = -1.0  # every build counts as slow
    lexical.rebuild_share = 1e-9  # so the next rebuild waits (practically) for ever after the last one
    assert lexical.search("pretty", collection=collection, caller=Caller("acme"))
    (root / "json.md").write_text("# json\n\nThe json module now documents orjson compatibility.\n")
    ingest([str(root / "json.md")], runtime, collection=collection, tenant="acme")
    for _ in range(20):  # commits keep coming, queries keep asking: no rebuild starts, the old snapshot answers
        assert lexical.search("orjson", collection=collection, caller=Caller("acme")) == []
        assert not lexical._rebuilding
    lexical.rebuild_share = 1.0  # no rest at all: the next check starts it
    deadline = time.monotonic() + 30
    while not lexical.search("orjson", collection=collection, caller=Caller("acme")):
        assert time.monotonic() < deadline, "the background rebuild never landed"
        time.sleep(0.05)


def test_another_tenants_documents_do_not_move_a_tenants_scores(setup):
    # BM25's statistics are per tenant: globex filling the collection with "zipfile" (lowering its idf, raising the
    # average length) changes nothing in acme's scores. With shared statistics both moved (a regression test).
    runtime, lexical, collection, root = setup
    before = {h.chunk_id: h.score for h in lexical.search("zipfile archives", collection=collection,
                                                            caller=Caller("acme"))}
    for n in range(12):
        (root / f"globex-{n}.md").write_text(f"# Zip {n}\n\n" + "zipfile zipfile archives and more words " * 20 + "\n")
        ingest([str(root / f"globex-{n}.md")], runtime, collection=collection, tenant="globex")
    after = {h.chunk_id: h.score for h in lexical.search("zipfile archives", collection=collection,
                                                           caller=Caller("acme"))}
    assert after.keys() == before.keys() and after == pytest.approx(before)
    assert lexical.search("zipfile archives", collection=collection, caller=Caller("globex"))  # globex's own


def test_another_tenants_commit_leaves_a_tenants_snapshot_alone(setup):
    # a snapshot per tenant, built from the tenant's own table: globex's commits rebuild nothing of acme's, and a
    # replica holds only the texts of the tenants it has answered
    runtime, lexical, collection, root = setup
    lexical.refresh_seconds = 0.0
    assert lexical.search("pretty", collection=collection, caller=Caller("acme"))
    built = lexical._snapshots[(collection, "acme")]
    assert set(built.tenants) == {"acme"} and list(lexical._snapshots) == [(collection, "acme")]
    (root / "globex.md").write_text("# Gossip\n\nThe globex newsletter mentions pretty printing too.\n")
    ingest([str(root / "globex.md")], runtime, collection=collection, tenant="globex")
    assert all(h.metadata["tenant"] == "acme"
               for h in lexical.search("pretty", collection=collection, caller=Caller("acme")))
    assert lexical._snapshots[(collection, "acme")] is built  # not rebuilt
    assert [h.source for h in lexical.search("newsletter", collection=collection, caller=Caller("globex"))] \
        == [f"file://{root}/globex.md"]
    (root / "json.md").write_text("# json\n\nThe json module now documents orjson compatibility.\n")
    ingest([str(root / "json.md")], runtime, collection=collection, tenant="acme")
    assert lexical.search("orjson", collection=collection, caller=Caller("acme"))  # acme's own commit: rebuilt


def test_one_collections_build_does_not_hold_up_another_collections_queries(index_settings, tmp_path):
    import threading

    runtime = Runtime(index_settings)
    for collection in ("slowbuild", "quick"):
        (tmp_path / f"{collection}.md").write_text(f"# {collection}\n\nThe {collection} notes mention lexical.\n")
        ingest([str(tmp_path / f"{collection}.md")], runtime, collection=collection, tenant="acme")
    entered, release = threading.Event(), threading.Event()

    class Paused(LexicalRetriever):  # the real retriever, with a build of "slowbuild" held open
        def _build(self, key, generation):
            if key[0] == "slowbuild":
                entered.set()
                assert release.wait(30)
            return super()._build(key, generation)

    lexical = Paused(runtime.index, refresh_seconds=0.0)
    slow = threading.Thread(target=lexical.search, args=("lexical",), kwargs={"collection": "slowbuild",
                                                                              "caller": Caller("acme")})
    slow.start()
    try:
        assert entered.wait(30)
        answered = []
        quick = threading.Thread(target=lambda: answered.append(
            lexical.search("lexical", collection="quick", caller=Caller("acme"))))
        quick.start()
        quick.join(10)
        assert answered and answered[0][0].source.endswith("quick.md")  # while "slowbuild" is still building
    finally:
        release.set()
        slow.join(30)


def test_snapshots_past_the_row_budget_drop_the_least_recently_asked(setup):
    runtime, lexical, collection, root = setup
    for tenant in ("globex", "initech"):
        (root / f"{tenant}.md").write_text(f"# {tenant}\n\nThe {tenant} handbook mentions pretty printing.\n")
        ingest([str(root / f"{tenant}.md")], runtime, collection=collection, tenant=tenant)
    lexical.max_rows = 1  # one row: only the newest snapshot is kept past the budget
    for tenant in ("acme", "globex", "initech"):
        assert lexical.search("pretty", collection=collection, caller=Caller(tenant))
    assert list(lexical._snapshots) == [(collection, "initech")]
    assert lexical.search("pretty", collection=collection, caller=Caller("acme"))  # rebuilt when asked again
    lexical.max_rows = 10_000
    assert lexical.search("handbook", collection=collection, caller=Caller("globex"))
    assert list(lexical._snapshots) == [(collection, "acme"), (collection, "globex")]
