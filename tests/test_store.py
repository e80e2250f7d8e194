"""The store protocol's conformance suite, run against every backend (tests/conftest.py STORES): Chroma embedded
and `chroma run`, LanceDB on a folder and on moto's S3 server. Delivery semantics (duplicates, reordering, late
versions, deletes, two writers at once all end in exactly the chunks of the newest version), paging, counts, and
tenant and group isolation in dense, lexical and hybrid search."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import timedelta

import numpy as np
import pytest

from ragfn.core.errors import BadEvent
from ragfn.eventing.events import Chunk, DocumentTombstoned, DocumentVersion, EmbeddedBatch, sequence_key
from ragfn.retrieval.dense import Caller, DenseRetriever
from ragfn.serve.runtime import Runtime
from ragfn.store.base import Index
from ragfn.store.chroma import ChromaIndex
from ragfn.store.partitions import chunk_table_name, chunk_tables_of
from ragfn.store.vectors import encode_vector

pytestmark = pytest.mark.integration
DIM = 8
URI = "s3://bucket/docs/guide.md"


def make_batches(collection: str, version: str, sequence: int, texts: list[str], per_batch: int = 2,
                 embedder: str = "test-embedder") -> list[EmbeddedBatch]:
    doc = DocumentVersion(collection=collection, document_id=URI, version=version, sequence=sequence_key(sequence),
                          tenant="acme", groups=["eng"])
    chunks = [Chunk(number=i, text=t, start=0, end=len(t), heading_path=["Guide"], tokens=len(t.split()),
                    content_hash=hashlib.sha256(t.encode()).hexdigest()) for i, t in enumerate(texts)]
    rng = np.random.default_rng(sequence)
    groups = [chunks[i:i + per_batch] for i in range(0, len(chunks), per_batch)]
    return [EmbeddedBatch(document=doc, batch=b, batches=len(groups), total_chunks=len(chunks), chunks=group,
                          embedder=embedder, dimensions=DIM,
                          vectors=[encode_vector(rng.normal(size=DIM).astype(np.float32)) for _ in group])
            for b, group in enumerate(groups)]


def rows_of(index: Index, collection: str, uri: str = URI) -> dict[str, tuple[str, str]]:
    """Every stored row of one document: id -> (version, text), read through the protocol's paging."""
    if not index.exists(collection):
        return {}
    return {i: (m["version"], t) for page in index.rows(collection)
            for i, t, m in zip(page.ids, page.texts, page.metadatas, strict=True) if m["document_id"] == uri}


def stored(index: Index, collection: str) -> list[tuple[str, str]]:
    return sorted(rows_of(index, collection).values())


@pytest.fixture
def index(store_settings) -> Index:
    return Runtime(store_settings).index


V1 = ["alpha one", "alpha two", "alpha three"]
V2 = ["beta one", "beta two"]


def test_batches_commit_only_when_complete_in_any_order(index, unique_collection):
    first, second = make_batches(unique_collection, "v1", 10, V1)
    assert index.write_batch(second) is None  # reordered: the last batch first
    assert index.ledger_entry(unique_collection, URI) is None
    indexed = index.write_batch(first)
    assert indexed is not None and indexed.chunks == 3 and indexed.version == "v1"
    assert stored(index, unique_collection) == sorted(("v1", t) for t in V1)
    assert index.stats()[unique_collection] == {"documents": 1, "chunks": 3}


def test_duplicate_deliveries_change_nothing(index, unique_collection):
    batches = make_batches(unique_collection, "v1", 10, V1)
    for batch in batches + batches + batches[::-1]:
        index.write_batch(batch)
    assert stored(index, unique_collection) == sorted(("v1", t) for t in V1)
    assert index.ledger_entry(unique_collection, URI).chunks == 3


def test_new_version_replaces_stale_chunks(index, unique_collection):
    for batch in make_batches(unique_collection, "v1", 10, V1):
        index.write_batch(batch)
    (only,) = make_batches(unique_collection, "v2", 20, V2)
    indexed = index.write_batch(only)
    assert indexed.replaced_versions == ["v1"]
    assert stored(index, unique_collection) == sorted(("v2", t) for t in V2)


def test_late_older_version_never_overwrites_newer(index, unique_collection):
    old = make_batches(unique_collection, "v1", 10, V1)
    new = make_batches(unique_collection, "v2", 20, V2)
    index.write_batch(old[0])  # v1 starts ...
    assert index.write_batch(new[0]) is not None  # ... v2 completes ...
    assert index.write_batch(old[1]) is None  # ... and the rest of v1 arrives late
    assert stored(index, unique_collection) == sorted(("v2", t) for t in V2)
    assert index.ledger_entry(unique_collection, URI).version == "v2"


def test_delete_removes_every_chunk_and_blocks_older_upserts(index, unique_collection):
    for batch in make_batches(unique_collection, "v1", 10, V1):
        index.write_batch(batch)
    removed = index.tombstone(DocumentTombstoned(collection=unique_collection, document_id=URI,
                                                 sequence=sequence_key(15)))
    assert removed.chunks_removed == 3
    assert stored(index, unique_collection) == []
    # a delayed upsert from before the delete must not resurrect the document
    for batch in make_batches(unique_collection, "v0", 12, ["ghost"]):
        assert index.write_batch(batch) is None
    assert stored(index, unique_collection) == []
    assert index.stats()[unique_collection] == {"documents": 0, "chunks": 0}
    # a re-creation after the delete is accepted
    for batch in make_batches(unique_collection, "v3", 30, V2):
        index.write_batch(batch)
    assert stored(index, unique_collection) == sorted(("v3", t) for t in V2)


def test_stale_delete_is_ignored(index, unique_collection):
    for batch in make_batches(unique_collection, "v2", 20, V2):
        index.write_batch(batch)
    assert index.tombstone(DocumentTombstoned(collection=unique_collection, document_id=URI,
                                              sequence=sequence_key(15))) is None
    assert stored(index, unique_collection) == sorted(("v2", t) for t in V2)


def test_vectors_from_another_embedder_are_refused(index, unique_collection):
    for batch in make_batches(unique_collection, "v1", 10, V1):
        index.write_batch(batch)
    (other,) = make_batches(unique_collection, "v2", 20, V2, per_batch=5, embedder="another-model")
    with pytest.raises(BadEvent, match="holds vectors from 'test-embedder'"):
        index.write_batch(other)
    assert stored(index, unique_collection) == sorted(("v1", t) for t in V1)


def test_malformed_vectors_write_nothing(index, unique_collection):
    (batch,) = make_batches(unique_collection, "v1", 10, V2, per_batch=5)
    broken = batch.model_copy(update={"vectors": [batch.vectors[0], "not-base64!"]})
    with pytest.raises(BadEvent, match="base64"):
        index.write_batch(broken)
    short = batch.model_copy(update={"vectors": batch.vectors[:1]})
    with pytest.raises(BadEvent, match="2 chunks but 1 vectors"):
        index.write_batch(short)
    assert unique_collection not in index.collections() or stored(index, unique_collection) == []


def test_reusable_vectors_by_content_hash(index, unique_collection):
    batches = make_batches(unique_collection, "v1", 10, V1)
    for batch in batches:
        index.write_batch(batch)
    hashes = [c.content_hash for c in batches[0].chunks]
    found = index.reusable_vectors(unique_collection, "test-embedder", hashes + ["unknown"], "acme")
    assert set(found) == set(hashes)
    assert index.reusable_vectors(unique_collection, "another-model", hashes, "acme") == {}
    assert index.reusable_vectors(unique_collection, "test-embedder", hashes, "globex") == {}  # the tenant's own


def test_unchanged_chunks_keep_their_rows_across_versions(index, unique_collection):
    for batch in make_batches(unique_collection, "v1", 10, V1):
        index.write_batch(batch)
    before = set(rows_of(index, unique_collection))
    edited = ["alpha one", "alpha two, edited", "alpha three"]
    batches = make_batches(unique_collection, "v2", 20, edited)
    for batch in batches:
        index.write_batch(batch)
    after = set(rows_of(index, unique_collection))
    assert len(set(before) & set(after)) == 2  # "alpha one" and "alpha three" were relabelled, not rewritten
    assert stored(index, unique_collection) == sorted(("v2", t) for t in edited)
    # a late batch of the old version must not take the shared rows back
    for batch in make_batches(unique_collection, "v1", 10, V1):
        assert index.write_batch(batch) is None
    assert stored(index, unique_collection) == sorted(("v2", t) for t in edited)


def test_repeated_text_in_one_document_gets_one_row_per_occurrence(index, unique_collection):
    from ragfn.ingest.pipeline import with_occurrences

    batches = make_batches(unique_collection, "v1", 10, ["same", "other", "same"], per_batch=3)
    batch = batches[0].model_copy(update={"chunks": with_occurrences(batches[0].chunks)})
    assert index.write_batch(batch).chunks == 3
    assert stored(index, unique_collection) == [("v1", "other"), ("v1", "same"), ("v1", "same")]


def test_collections_stay_cosine_and_remember_their_embedder(index_settings, unique_collection):
    first = ChromaIndex(index_settings)
    for batch in make_batches(unique_collection, "v1", 10, V1):
        first.write_batch(batch)
    fresh = ChromaIndex(index_settings)  # a new process sees what the first one recorded
    collection = fresh.chunks(unique_collection, "acme")
    assert collection.metadata["ragfn:embedder"] == "test-embedder"
    assert collection.configuration_json["hnsw"]["space"] == "cosine"


def test_two_writers_commit_versions_of_one_document_at_once(store_settings, index, unique_collection):
    # Two replicas where the backend allows concurrent writers, else two request threads of one replica. Shared
    # texts make the versions relabel the same rows while they race.
    import random
    import threading

    second = Runtime(store_settings).index if index.concurrent_writers else index
    shared = ["shared one", "shared two"]
    for round_ in range(3):
        older = make_batches(unique_collection, f"a{round_}", 100 * round_ + 10, shared + [f"old {round_}"], 1)
        newer = make_batches(unique_collection, f"b{round_}", 100 * round_ + 20, shared + [f"new {round_}"], 1)
        random.Random(round_).shuffle(older)
        start = threading.Barrier(2)
        errors = []

        def write(writer: Index, batches: list[EmbeddedBatch]) -> None:
            start.wait()
            try:
                for batch in batches:
                    writer.write_batch(batch)
            except Exception as exc:  # surfaced below: a conflict must be retried inside the store, not raised
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(index, older)),
                   threading.Thread(target=write, args=(second, newer))]
        [t.start() for t in threads]
        [t.join(timeout=120) for t in threads]
        assert errors == []
        assert index.ledger_entry(unique_collection, URI).version == f"b{round_}"
        assert stored(index, unique_collection) == sorted((f"b{round_}", t) for t in shared + [f"new {round_}"])


def test_paging_reads_every_row_past_33k(index, unique_collection):
    # one unbounded Chroma get() fails from 32,767 rows on; the protocol's pages must not
    total, per_document = 33_000, 3_000
    rng = np.random.default_rng(0)
    for d in range(total // per_document):
        doc = DocumentVersion(collection=unique_collection, document_id=f"file:///big/{d}.md", version="v1",
                              sequence=sequence_key(d + 1), tenant="acme")
        chunks = [Chunk(number=i, text=f"row {d}-{i}", start=0, end=1, tokens=2, content_hash=f"{d}-{i}")
                  for i in range(per_document)]
        vectors = [encode_vector(v) for v in rng.normal(size=(per_document, DIM)).astype(np.float32)]
        assert index.write_batch(EmbeddedBatch(document=doc, batch=0, batches=1, total_chunks=per_document,
                                               chunks=chunks, embedder="test-embedder", dimensions=DIM,
                                               vectors=vectors)) is not None
    pages = list(index.rows(unique_collection, page_rows=10_000))
    ids = [i for page in pages for i in page.ids]
    assert len(ids) == len(set(ids)) == total and max(len(page.ids) for page in pages) <= 10_000
    assert index.stats()[unique_collection] == {"documents": total // per_document, "chunks": total}
    assert sum(e.chunks for e in index.ledger(unique_collection)) == total


def write_document(index: Index, collection: str, uri: str, texts: list[str], *, tenant: str | None,
                   groups: list[str], sequence: int = 10, vectors: np.ndarray | None = None) -> None:
    doc = DocumentVersion(collection=collection, document_id=uri, version="v1", sequence=sequence_key(sequence),
                          tenant=tenant, groups=groups)
    chunks = [Chunk(number=i, text=t, start=0, end=len(t), tokens=len(t.split()),
                    content_hash=hashlib.sha256(t.encode()).hexdigest()) for i, t in enumerate(texts)]
    if vectors is None:
        vectors = np.random.default_rng(sequence).normal(size=(len(texts), DIM)).astype(np.float32)
    assert index.write_batch(EmbeddedBatch(document=doc, batch=0, batches=1, total_chunks=len(texts), chunks=chunks,
                                           embedder="test-embedder", dimensions=DIM,
                                           vectors=[encode_vector(v) for v in vectors])) is not None


class Vectors:
    """An embedder stand-in for search tests: the question's vector is given, so this is never asked."""

    name, dimensions = "test-embedder", DIM

    def embed(self, texts):  # pragma: no cover - every search below passes its vector
        raise AssertionError("the tests pass vectors")


SECRET = "the merger with initech closes on the ninth of march at a price of forty dollars"


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_a_tenant_never_sees_another_tenants_rows_even_with_identical_text(index, unique_collection, mode):
    from ragfn.retrieval.dense import Caller, DenseRetriever
    from ragfn.retrieval.hybrid import HybridRetriever
    from ragfn.retrieval.lexical import LexicalRetriever

    same = np.random.default_rng(7).normal(size=(3, DIM)).astype(np.float32)
    texts = [SECRET, "quarterly numbers are confidential", "the board meets on tuesdays"]
    write_document(index, unique_collection, "s3://globex/secret.md", texts, tenant="globex", groups=["*"],
                   vectors=same)
    write_document(index, unique_collection, "s3://acme/copy.md", texts, tenant="acme", groups=["*"], vectors=same)
    write_document(index, unique_collection, "s3://none/copy.md", texts, tenant=None, groups=["*"], vectors=same)
    retriever = HybridRetriever(DenseRetriever(index, Vectors()), LexicalRetriever(index, refresh_seconds=0.0))
    for tenant, prefix in (("acme", "s3://acme/"), ("globex", "s3://globex/"), (None, "s3://none/")):
        hits = retriever.search(SECRET, mode=mode, collection=unique_collection, top_k=1000, caller=Caller(tenant),
                                vector=same[0])
        assert hits and {h.source for h in hits} == {prefix + ("secret.md" if tenant == "globex" else "copy.md")}
        assert hits[0].text == SECRET
    assert retriever.search(SECRET, mode=mode, collection=unique_collection, top_k=1000, caller=Caller("initech"),
                            vector=same[0]) == []


@pytest.mark.parametrize("mode", ["dense", "lexical"])
def test_groups_filter_before_the_top_k(index, unique_collection, mode):
    from ragfn.retrieval.dense import Caller, DenseRetriever
    from ragfn.retrieval.hybrid import HybridRetriever
    from ragfn.retrieval.lexical import LexicalRetriever

    rng = np.random.default_rng(3)
    near = rng.normal(size=DIM).astype(np.float32)
    # twenty hr-only chunks nearer the question than the one public chunk: a filter after the top-k would lose it
    write_document(index, unique_collection, "s3://acme/hr.md", [f"salary review band {n}" for n in range(20)],
                   tenant="acme", groups=["hr"], vectors=np.stack([near] * 20))
    write_document(index, unique_collection, "s3://acme/public.md", ["salary review dates are public"],
                   tenant="acme", groups=["*"], sequence=11, vectors=-near[None, :])
    retriever = HybridRetriever(DenseRetriever(index, Vectors()), LexicalRetriever(index, refresh_seconds=0.0))

    def sources(groups: tuple[str, ...]) -> list[str]:
        return [h.source for h in retriever.search("salary review", mode=mode, collection=unique_collection,
                                                   top_k=1, caller=Caller("acme", groups), vector=near)]

    assert sources(()) == ["s3://acme/public.md"]
    assert sources(("eng",)) == ["s3://acme/public.md"]
    assert sources(("hr",)) == ["s3://acme/hr.md"]


def test_counts_per_tenant_for_stats_and_me(index, unique_collection):
    write_document(index, unique_collection, "s3://a/1.md", ["one", "two"], tenant="acme", groups=["*"])
    write_document(index, unique_collection, "s3://a/2.md", ["three"], tenant="acme", groups=["*"], sequence=11)
    write_document(index, unique_collection, "s3://g/1.md", ["four"], tenant="globex", groups=["*"], sequence=12)
    index.tombstone(DocumentTombstoned(collection=unique_collection, document_id="s3://a/2.md",
                                       sequence=sequence_key(13)))
    per_tenant: dict[str, int] = {}
    for entry in index.ledger(unique_collection):
        if entry.state == "indexed":
            per_tenant[entry.tenant] = per_tenant.get(entry.tenant, 0) + entry.chunks
    assert per_tenant == {"acme": 2, "globex": 1}
    assert index.stats()[unique_collection] == {"documents": 2, "chunks": 3}
    assert index.version_rows(unique_collection, "s3://a/1.md", "v1", "acme") == 2
    assert index.version_rows(unique_collection, "s3://a/2.md", "v1", "acme") == 0
    assert unique_collection in index.collections()


def test_names_the_store_cannot_take_are_refused_before_any_write(index):
    with pytest.raises(BadEvent, match="invalid collection name"):
        index.exists("../escape")
    with pytest.raises(BadEvent, match="invalid collection name"):  # `$` matched before a trailing newline
        index.exists("docs\n")
    assert chunk_table_name("docs", "acme\n").startswith("ragfn-docs.h.")
    (batch,) = make_batches("bad name", "v1", 10, V2, per_batch=5)
    with pytest.raises(BadEvent, match="invalid collection name"):
        index.write_batch(batch)


@pytest.mark.parametrize("mode", ["dense", "lexical"])
def test_a_tenant_or_group_name_cannot_widen_the_filter(index, unique_collection, mode):
    # names reach LanceDB as SQL string literals and Chroma as metadata values: quotes and SQL in a name are data
    from ragfn.retrieval.dense import Caller, DenseRetriever
    from ragfn.retrieval.hybrid import HybridRetriever
    from ragfn.retrieval.lexical import LexicalRetriever

    vector = np.random.default_rng(5).normal(size=(1, DIM)).astype(np.float32)
    write_document(index, unique_collection, "s3://globex/secret.md", [SECRET], tenant="globex", groups=["hr"],
                   vectors=vector)
    write_document(index, unique_collection, "s3://quote/own.md", [SECRET], tenant="o'brien", groups=["*"],
                   sequence=11, vectors=vector)
    retriever = HybridRetriever(DenseRetriever(index, Vectors()), LexicalRetriever(index, refresh_seconds=0.0))

    def sources(caller: Caller) -> set[str]:
        return {h.source for h in retriever.search(SECRET, mode=mode, collection=unique_collection, top_k=100,
                                                   caller=caller, vector=vector[0])}

    assert sources(Caller("o'brien")) == {"s3://quote/own.md"}
    assert sources(Caller("x' OR tenant = 'globex")) == set()
    assert sources(Caller("x' OR '1'='1")) == set()
    assert sources(Caller("globex", ("x']) OR true OR array_has_any(groups, ['hr",))) == set()
    assert sources(Caller("globex", ("hr",))) == {"s3://globex/secret.md"}


def test_each_tenant_has_a_table_of_its_own(index, unique_collection):
    odd = "Ünïcode tenant's; DROP TABLE"  # no table name can hold it: its table is named by its hash
    write_document(index, unique_collection, "s3://a/1.md", ["one", "two"], tenant="acme", groups=["*"])
    write_document(index, unique_collection, "s3://o/1.md", ["three"], tenant=odd, groups=["*"], sequence=11)
    write_document(index, unique_collection, "s3://n/1.md", ["four"], tenant=None, groups=["*"], sequence=12)
    assert sorted(chunk_tables_of(index._names(), unique_collection)) == sorted(
        chunk_table_name(unique_collection, tenant) for tenant in ("acme", odd, None))
    assert chunk_table_name(unique_collection, odd).startswith(f"ragfn-{unique_collection}.h.")
    # a case-insensitive disk must not put "Acme" in acme's folder
    assert chunk_table_name(unique_collection, "Acme").startswith(f"ragfn-{unique_collection}.h.")
    assert index.collections().count(unique_collection) == 1
    assert index.stats()[unique_collection] == {"documents": 3, "chunks": 4}
    assert sum(len(page.ids) for page in index.rows(unique_collection)) == 4
    retriever = DenseRetriever(index, Vectors())
    for tenant, texts in (("acme", {"one", "two"}), (odd, {"three"}), (None, {"four"})):
        hits = retriever.search("q", collection=unique_collection, top_k=10, caller=Caller(tenant),
                                vector=np.ones(DIM, np.float32))
        assert {h.text for h in hits} == texts


def test_another_tenants_table_takes_only_the_collections_embedder(index, unique_collection):
    write_document(index, unique_collection, "s3://a/1.md", ["one"], tenant="acme", groups=["*"])
    (other,) = make_batches(unique_collection, "v2", 20, V2, per_batch=5, embedder="another-model")
    other = other.model_copy(update={"document": other.document.model_copy(update={"tenant": "globex"})})
    with pytest.raises(BadEvent, match="holds vectors from 'test-embedder'"):
        index.write_batch(other)


def test_a_document_whose_tenant_changes_leaves_nothing_in_the_old_tenants_table(index, unique_collection):
    write_document(index, unique_collection, URI, ["moved text", "kept text"], tenant="acme", groups=["*"])
    write_document(index, unique_collection, URI, ["moved text"], tenant="globex", groups=["*"], sequence=11)
    retriever = DenseRetriever(index, Vectors())
    vector = np.ones(DIM, np.float32)
    assert retriever.search("q", collection=unique_collection, top_k=10, caller=Caller("acme"), vector=vector) == []
    assert [h.text for h in retriever.search("q", collection=unique_collection, top_k=10, caller=Caller("globex"),
                                             vector=vector)] == ["moved text"]
    assert index.stats()[unique_collection] == {"documents": 1, "chunks": 1}
    index.tombstone(DocumentTombstoned(collection=unique_collection, document_id=URI, sequence=sequence_key(12)))
    assert index.stats()[unique_collection] == {"documents": 0, "chunks": 0}


def make_shared(index: Index, collection: str, uri: str, tenant: str, *, older: bool = False) -> None:
    """Turn an untenanted document into one written before the table-per-tenant layout: its rows, in the
    collection's untenanted table, carry the tenant (`older`: and an older label than the ledger's)."""
    entry = index.ledger_entry(collection, uri)
    index._record(collection, dataclasses.replace(entry, tenant=tenant))
    label = {"tenant": tenant} | ({"sequence": sequence_key(1)} if older else {})
    if isinstance(index, ChromaIndex):
        table = index.chunks(collection)
        ids = table.get(where={"document_id": uri}, include=[])["ids"]
        table.update(ids=ids, metadatas=[label] * len(ids))
    else:
        index.chunk_table(collection).update(where=f"document_id = '{uri}'", values=label)


@pytest.mark.parametrize("mode", ["dense", "lexical"])
def test_rows_from_the_shared_layout_are_read_until_maintenance_moves_them(store_settings, index, unique_collection,
                                                                         mode):
    from ragfn.retrieval.lexical import LexicalRetriever

    write_document(index, unique_collection, "s3://a/1.md", ["pelican alpha", "pelican beta"], tenant=None,
                   groups=["*"])
    write_document(index, unique_collection, "s3://a/2.md", ["pelican gamma"], tenant=None, groups=["*"], sequence=11)
    write_document(index, unique_collection, "s3://g/1.md", ["pelican delta"], tenant=None, groups=["*"], sequence=12)
    write_document(index, unique_collection, "s3://n/1.md", ["pelican epsilon"], tenant=None, groups=["*"],
                   sequence=13)
    make_shared(index, unique_collection, "s3://a/1.md", "acme")
    make_shared(index, unique_collection, "s3://a/2.md", "acme", older=True)  # a version the ledger no longer has
    make_shared(index, unique_collection, "s3://g/1.md", "globex")
    reader = Runtime(store_settings).index  # a replica started after the upgrade
    if mode == "dense":
        retriever, extra = DenseRetriever(reader, Vectors()), {"vector": np.ones(DIM, np.float32)}
    else:
        retriever, extra = LexicalRetriever(reader, refresh_seconds=0.0), {}

    def texts(tenant: str | None) -> set[str]:
        return {h.text for h in retriever.search("pelican", collection=unique_collection, top_k=10,
                                                 caller=Caller(tenant), **extra)}

    before = {tenant: texts(tenant) for tenant in ("acme", "globex", None)}
    assert before["acme"] >= {"pelican alpha", "pelican beta"} and before["globex"] == {"pelican delta"}
    assert before[None] == {"pelican epsilon"}
    report = index.maintain(unique_collection, keep_versions=timedelta(hours=1))
    assert report["shared_rows_moved"] == 3 and report["tables"] == 3
    assert index.maintain(unique_collection, keep_versions=timedelta(hours=1))["shared_rows_moved"] == 0
    reader._shared.forget(unique_collection)
    assert texts("acme") == {"pelican alpha", "pelican beta"}  # the stale row was dropped, not moved
    assert texts("globex") == {"pelican delta"} and texts(None) == {"pelican epsilon"}
    assert index.stats()[unique_collection] == {"documents": 4, "chunks": 4}
    # the moved document's next version replaces its rows in the tenant's table
    write_document(index, unique_collection, "s3://a/1.md", ["pelican zeta"], tenant="acme", groups=["*"],
                   sequence=20)
    assert texts("acme") == {"pelican zeta"}


def test_a_version_committed_while_its_rows_move_keeps_every_row(store_settings, index, unique_collection,
                                                                 monkeypatch):
    # Another replica commits the document's next version (sharing one text, so one row id) between the mover's copy
    # and its second ledger read: the mover's deletes must spare the row the writer relabelled.
    write_document(index, unique_collection, URI, ["pelican alpha", "pelican beta"], tenant=None, groups=["*"])
    make_shared(index, unique_collection, URI, "acme")
    writer, put_rows = Runtime(store_settings).index, index.put_rows

    def put_then_commit(collection: str, tenant: str, rows: list[dict]) -> None:
        put_rows(collection, tenant, rows)
        write_document(writer, unique_collection, URI, ["pelican alpha", "pelican gamma"], tenant="acme",
                       groups=["*"], sequence=20)

    monkeypatch.setattr(index, "put_rows", put_then_commit)
    index.maintain(unique_collection, keep_versions=timedelta(hours=1))
    hits = DenseRetriever(Runtime(store_settings).index, Vectors()).search(
        "q", collection=unique_collection, top_k=10, caller=Caller("acme"), vector=np.ones(DIM, np.float32))
    assert sorted(h.text for h in hits) == ["pelican alpha", "pelican gamma"]
    assert index.stats()[unique_collection] == {"documents": 1, "chunks": 2}


def test_maintenance_sweeps_rows_that_no_commit_or_delete_will_remove(index, unique_collection):
    # A version of the document under tenant acme is half written (its writer dies, or it loses a race with an
    # operator re-mapping the document) while a newer version commits under globex: that commit cleans globex's
    # table and the tenant its ledger read named (none), so acme's rows would stay readable by acme for good.
    def texts() -> set[str]:
        return {text for _, text in rows_of(index, unique_collection).values()}

    def swept() -> int:
        return index.maintain(unique_collection, keep_versions=timedelta(hours=1))["orphan_rows_removed"]

    assert index.write_batch(make_batches(unique_collection, "v1", 10, ["stale acme", "x"], per_batch=1)[0]) is None
    write_document(index, unique_collection, URI, ["globex text"], tenant="globex", groups=["*"], sequence=11)
    assert index.write_batch(make_batches(unique_collection, "v3", 12, ["next acme", "y"], per_batch=1)[0]) is None
    acme = DenseRetriever(index, Vectors())
    assert "stale acme" in {h.text for h in acme.search("q", collection=unique_collection, top_k=10,
                                                        caller=Caller("acme", ["eng"]), vector=np.ones(DIM))}
    assert swept() == 1
    assert texts() == {"globex text", "next acme"}  # a newer version still being written stays
    assert swept() == 0
    # a delete racing that newer acme version: the tombstone cleans globex's tables, the sweep acme's
    index.tombstone(DocumentTombstoned(collection=unique_collection, document_id=URI, sequence=sequence_key(13)))
    assert texts() == {"next acme"}
    assert swept() == 1 and texts() == set()
    assert index.stats()[unique_collection] == {"documents": 0, "chunks": 0}


# Security: chromadb's anonymized telemetry was on in every pod and on every laptop.
def test_chroma_clients_send_no_telemetry(settings, chroma_server):
    from ragfn.store.chroma_tables import connect

    for where in (settings, settings.model_copy(update={"chroma_url": chroma_server})):
        assert connect(where).get_settings().anonymized_telemetry is False
