"""Dense search against real Chroma (embedded and `chroma run`): tenants and ACL groups are filtered inside."""

from __future__ import annotations

import pytest

from ragfn.core.errors import BadEvent
from ragfn.ingest.walk import ingest
from ragfn.retrieval.dense import Caller, DenseRetriever
from ragfn.serve.runtime import Runtime

pytestmark = pytest.mark.integration

SECRET = "# Payroll\n\nThe salary review happens every March. Managers submit raises to HR by the tenth.\n"
PUBLIC_DOC = "# Holidays\n\nThe office closes on public holidays. Remote work is allowed on bridge days.\n"


@pytest.fixture
def corpus(index_settings, unique_collection, tmp_path):
    runtime = Runtime(index_settings)
    for tenant in ("acme", "globex"):
        folder = tmp_path / tenant
        folder.mkdir()
        (folder / "payroll.md").write_text(SECRET.replace("March", "March" if tenant == "acme" else "May"))
        (folder / "holidays.md").write_text(PUBLIC_DOC)
        ingest([str(folder / "payroll.md")], runtime, collection=unique_collection, tenant=tenant, groups=("hr",))
        ingest([str(folder / "holidays.md")], runtime, collection=unique_collection, tenant=tenant)
    return DenseRetriever(runtime.index, runtime.embedder), unique_collection, tmp_path


def test_a_tenant_never_sees_another_tenants_chunks(corpus):
    retriever, collection, root = corpus
    for tenant in ("acme", "globex"):
        hits = retriever.search("When is the salary review?", collection=collection, top_k=50,
                                caller=Caller(tenant, ("hr",)))
        assert hits and all(hit.source.startswith(f"file://{root}/{tenant}/") for hit in hits)
        assert hits[0].source.endswith("payroll.md") and hits[0].score > 0.3


def test_acl_groups_filter_inside_the_search_not_after_it(corpus):
    retriever, collection, _ = corpus
    # the payroll chunk is the best match, yet a caller outside "hr" gets only what they may read, at any depth
    hits = retriever.search("When is the salary review?", collection=collection, top_k=50,
                            caller=Caller("acme", ("eng",)))
    assert hits and all(hit.source.endswith("holidays.md") for hit in hits)
    assert retriever.search("salary", collection=collection, caller=Caller(None, ("hr",))) == []


def test_bad_searches_are_clear(corpus):
    retriever, collection, _ = corpus
    with pytest.raises(BadEvent, match="empty"):
        retriever.search("   ", collection=collection)
    with pytest.raises(BadEvent, match="top_k"):
        retriever.search("x", collection=collection, top_k=0)
    assert retriever.search("anything", collection="nothing-here") == []


def test_a_caller_owning_a_small_part_of_a_shared_collection_still_gets_top_k(index_settings, unique_collection,
                                                                               tmp_path):
    # 30 foreign salary chunks sit nearer to the question than the caller's own documents, so the unfiltered
    # first pass (overfetch 1: top_k candidates) holds nothing readable and the filtered query must answer.
    runtime = Runtime(index_settings)
    for n in range(30):
        (tmp_path / f"salary-{n}.md").write_text(SECRET.replace("March", f"month {n}"))
    ingest([str(tmp_path)], runtime, collection=unique_collection, tenant="globex")
    mine = tmp_path / "mine"
    mine.mkdir()
    for n in range(3):
        (mine / f"holidays-{n}.md").write_text(PUBLIC_DOC.replace("bridge days", f"bridge day {n}"))
    ingest([str(mine)], runtime, collection=unique_collection, tenant="acme")
    runtime.index.overfetch = 1
    retriever = DenseRetriever(runtime.index, runtime.embedder)
    hits = retriever.search("When is the salary review?", collection=unique_collection, top_k=3,
                            caller=Caller("acme"))
    assert len(hits) == 3 and all(hit.source.startswith(f"file://{mine}/") for hit in hits)
    runtime.index.overfetch = 4
    assert [h.chunk_id for h in hits] == [h.chunk_id for h in DenseRetriever(runtime.index, runtime.embedder).search(
        "When is the salary review?", collection=unique_collection, top_k=3, caller=Caller("acme"))]
