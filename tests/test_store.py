"""The index's delivery semantics against real Chroma, embedded and `chroma run`: duplicates, reordering,
late versions and deletes all end in exactly the chunks of the newest version."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ragfn.core.errors import BadEvent
from ragfn.eventing.events import Chunk, DocumentTombstoned, DocumentVersion, EmbeddedBatch, sequence_key
from ragfn.store.chroma import ChromaIndex
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


def stored(index: ChromaIndex, collection: str) -> list[tuple[str, str]]:
    found = index.chunks(collection).get(where={"document_id": URI}, include=["documents", "metadatas"])
    return sorted((m["version"], d) for m, d in zip(found["metadatas"], found["documents"], strict=True))


@pytest.fixture
def index(index_settings) -> ChromaIndex:
    return ChromaIndex(index_settings)


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
    found = index.reusable_vectors(unique_collection, "test-embedder", hashes + ["unknown"])
    assert set(found) == set(hashes)
    assert index.reusable_vectors(unique_collection, "another-model", hashes) == {}


def test_unchanged_chunks_keep_their_rows_across_versions(index, unique_collection):
    for batch in make_batches(unique_collection, "v1", 10, V1):
        index.write_batch(batch)
    before = index.chunks(unique_collection).get(where={"document_id": URI})["ids"]
    edited = ["alpha one", "alpha two, edited", "alpha three"]
    batches = make_batches(unique_collection, "v2", 20, edited)
    for batch in batches:
        index.write_batch(batch)
    after = index.chunks(unique_collection).get(where={"document_id": URI})["ids"]
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
    collection = fresh.chunks(unique_collection)
    assert collection.metadata["ragfn:embedder"] == "test-embedder"
    assert collection.configuration_json["hnsw"]["space"] == "cosine"
