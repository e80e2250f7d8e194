"""The three ingestion stages as plain functions: chunk an object, embed a batch, index a batch.

The Knative functions in `functions/` and the in-process CLI pipeline both call these, so a laptop and a
cluster run the same code. Each stage returns the events it produces and a summary for logs and replies.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from ragfn.core.errors import ObjectNotFound, ObjectTooLarge, UnsupportedContent
from ragfn.eventing import events
from ragfn.eventing.events import Chunk, ChunkBatch, DocumentTombstoned, DocumentVersion, EmbeddedBatch
from ragfn.eventing.publish import OutboundEvent, StageResult
from ragfn.ingest.storage_events import ObjectChange
from ragfn.store.vectors import encode_vector

if TYPE_CHECKING:
    from ragfn.core.config import Settings
    from ragfn.ingest.chunking import TokenCounter
    from ragfn.ingest.embedding import Embedder
    from ragfn.ingest.objects import ObjectReader
    from ragfn.store.base import Index, LedgerEntry

# Room left in each chunk batch for the vector that embed adds to every chunk (base64 of 1536 float32).
VECTOR_ALLOWANCE = 8192
ENVELOPE_ALLOWANCE = 2048


class IngestServices(Protocol):
    """The clients the stages use, built once per process from Settings (`ragfn.serve.runtime.Runtime` is one)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def reader(self) -> ObjectReader: ...

    @property
    def index(self) -> Index: ...

    @property
    def embedder(self) -> Embedder: ...

    @property
    def token_counter(self) -> TokenCounter: ...


def content_version(data: bytes) -> str:
    return "sha256-" + hashlib.sha256(data).hexdigest()[:24]


def microseconds(moment: datetime | None) -> int:
    return int(moment.timestamp() * 1_000_000) if moment else time.time_ns() // 1000


def indexed_as_is(change: ObjectChange, entry: LedgerEntry | None, chunking: str, runtime: IngestServices) -> bool:
    """Whether the index holds the object's current version, cut this way, known from a HEAD without a download.

    A nightly re-sync sends an upsert for every object in a bucket; most are unchanged. S3 and GCS name the version
    a HEAD sees (versionId or ETag, generation); file:// versions are content hashes, so files are always read."""
    if not (entry and entry.state == "indexed" and entry.chunking == chunking) or change.uri.startswith("file://"):
        return False
    if change.version not in (None, entry.version):  # a notification naming a new version: no HEAD needed
        return False
    return runtime.reader.head(change.uri).version == entry.version


def _still_there(uri: str, runtime: IngestServices) -> bool:
    try:
        runtime.reader.head(uri)
    except ObjectNotFound:
        return False
    return True


def chunk_change(change: ObjectChange, runtime: IngestServices, *, event_time: datetime | None = None) -> StageResult:
    """Turn one storage change into chunk batches (upsert) or a tombstone (delete)."""
    summary = {"uri": change.uri, "action": change.action, "collection": change.collection}
    if change.action == "delete":
        if _still_there(change.uri, runtime):
            # The store says the object exists: the delete is stale (a re-creation overtook it, or it removed an
            # older version of a versioned object), or forged. A tombstone with a crafted `sequencer` would
            # otherwise outrank every later upsert.
            return StageResult([], summary | {"status": "stale", "detail": "the object still exists"})
        sequence = events.sequence_key(change.sequence if change.sequence is not None else microseconds(event_time))
        entry = runtime.index.ledger_entry(change.collection, change.uri)
        if entry and entry.sequence >= sequence:
            # the store says the object is gone now, so whatever the ledger holds (even under a crafted sequence)
            # is older than this delete
            sequence = events.sequence_key(int(entry.sequence, 16) + 1)
            summary |= {"resequenced": entry.sequence}
        tomb = DocumentTombstoned(collection=change.collection, document_id=change.uri, sequence=sequence)
        return StageResult([OutboundEvent(events.DOCUMENT_TOMBSTONED, tomb, subject=change.uri)], summary)

    # imported here: loaders need the "chunk" extra, which the embed and index images do not install
    from ragfn.ingest.chunking import ChunkingConfig, chunk_document
    from ragfn.ingest.loaders import load_document

    config = ChunkingConfig(runtime.settings.chunk_tokens, runtime.settings.chunk_overlap_tokens)
    entry = runtime.index.ledger_entry(change.collection, change.uri)
    try:
        if indexed_as_is(change, entry, config.key, runtime):
            return StageResult([], summary | {"status": "unchanged", "version": entry.version})
        stored = runtime.reader.read(change.uri)
    except ObjectNotFound:
        return StageResult([], summary | {"status": "gone", "detail": "object no longer exists; a delete follows"})
    current = stored.version or content_version(stored.data)  # file://: the content hash is the version
    if change.version and change.version != current:
        return StageResult([], summary | {"status": "superseded", "detail": f"object is now {current}"})

    version = current
    sequence = change.sequence if change.sequence is not None else stored.sequence
    meta = stored.metadata
    document = DocumentVersion(
        collection=change.collection, document_id=change.uri, version=version,
        sequence=events.sequence_key(sequence if sequence is not None else microseconds(event_time)),
        # the object's own labels outrank the event's: whoever may send events must not choose whose they are
        tenant=meta.get("ragfn-tenant") or (change.tenant if change.event_labels else None) or None,
        groups=[g.strip() for g in meta.get("ragfn-groups", "").split(",") if g.strip()]
        or (list(change.groups) if change.event_labels else []),
        content_type=change.content_type or stored.content_type, size=stored.size,
    )
    summary |= {"version": version}
    document = document.model_copy(update={"chunking": config.key})
    if entry and entry.state == "indexed" and entry.version == version:
        if entry.chunking == config.key:
            return StageResult([], summary | {"status": "unchanged"})
        # the same version cut another way (the chunk settings changed): a newer sequence makes it replace
        # the old chunks like any new version would
        sequence = max(document.sequence, events.sequence_key(int(entry.sequence, 16) + 1))
        document = document.model_copy(update={"sequence": sequence})
        summary |= {"rechunked": entry.chunking or "unrecorded"}
    elif entry and entry.is_newer_than(document.sequence, version):
        # The object was just read, holding this version (a notification naming another one is superseded above):
        # whatever the ledger records as newer (another version, a delete) is not what the store holds now. Its
        # sequence can still sort above this one: an S3 `sequencer` is far larger than LastModified in microseconds
        # (a re-sync or `ragfn ingest` after a lost notification), or a forged one was sent. The store's current
        # object wins, so no sequence, however crafted, keeps the index from what the store holds.
        document = document.model_copy(update={"sequence": events.sequence_key(int(entry.sequence, 16) + 1)})
        summary |= {"resequenced": entry.sequence}
    if entry and entry.is_newer_than(document.sequence, version):
        return StageResult([], summary | {"status": "stale", "detail": f"index holds newer {entry.version}"})

    loaded = load_document(stored.data, name=change.uri, content_type=document.content_type)
    chunks = with_occurrences(chunk_document(loaded, config, runtime.token_counter))
    if not chunks:
        raise UnsupportedContent(f"{change.uri} has no text to index")
    if len(chunks) > runtime.settings.max_chunks_per_object:
        raise ObjectTooLarge(f"{change.uri} makes {len(chunks)} chunks, over RAGFN_MAX_CHUNKS_PER_OBJECT="
                             f"{runtime.settings.max_chunks_per_object}",
                             hint="split the document, or raise RAGFN_MAX_CHUNKS_PER_OBJECT on chunk")
    groups = batch_chunks(chunks, runtime.settings.max_event_bytes)
    out = [
        OutboundEvent(events.CHUNKS, ChunkBatch(document=document, batch=i, batches=len(groups),
                                               total_chunks=len(chunks), chunks=group),
                      key=f"{document.document_id}#{version}#{i}", subject=change.uri)
        for i, group in enumerate(groups)
    ]
    return StageResult(out, summary | {"status": "chunked", "chunks": len(chunks), "batches": len(groups)})


def with_occurrences(chunks: list[Chunk]) -> list[Chunk]:
    """Number repeated texts so that each chunk has its own content-addressed row in the index."""
    seen: dict[str, int] = {}
    numbered = []
    for chunk in chunks:
        numbered.append(chunk.model_copy(update={"occurrence": seen.get(chunk.content_hash, 0)}))
        seen[chunk.content_hash] = seen.get(chunk.content_hash, 0) + 1
    return numbered


def batch_chunks(chunks: list[Chunk], max_event_bytes: int) -> list[list[Chunk]]:
    """Greedy batches whose JSON, once embed has added vectors, stays under the event budget."""
    budget = max_event_bytes - ENVELOPE_ALLOWANCE
    groups: list[list[Chunk]] = [[]]
    used = 0
    for chunk in chunks:
        # every chunk travels twice in the embedded event (text + vector), so count it with its allowance
        cost = len(chunk.model_dump_json()) + VECTOR_ALLOWANCE
        if groups[-1] and used + cost > budget:
            groups.append([])
            used = 0
        groups[-1].append(chunk)
        used += cost
    return groups


def embed_batch(batch: ChunkBatch, runtime: IngestServices) -> StageResult:
    """Vectors for one batch, reusing stored vectors of chunks whose text has not changed."""
    embedder = runtime.embedder
    reusable = runtime.index.reusable_vectors(batch.document.collection, embedder.name,
                                              [c.content_hash for c in batch.chunks], batch.document.tenant)
    missing = [c for c in batch.chunks if c.content_hash not in reusable]
    fresh = dict(zip((c.content_hash for c in missing), embedder.embed([c.text for c in missing]), strict=True))
    vectors = [encode_vector(reusable.get(c.content_hash, fresh.get(c.content_hash))) for c in batch.chunks]
    embedded = EmbeddedBatch(document=batch.document, batch=batch.batch, batches=batch.batches,
                             total_chunks=batch.total_chunks, chunks=batch.chunks, embedder=embedder.name,
                             dimensions=embedder.dimensions, vectors=vectors,
                             reused=len(batch.chunks) - len(missing))
    key = f"{batch.document.document_id}#{batch.document.version}#{batch.batch}"
    summary = {"uri": batch.document.document_id, "batch": batch.batch, "embedded": len(missing),
               "reused": embedded.reused}
    return StageResult([OutboundEvent(events.EMBEDDED, embedded, key=key, subject=batch.document.document_id)],
                       summary)


def index_batch(batch: EmbeddedBatch, runtime: IngestServices) -> StageResult:
    indexed = runtime.index.write_batch(batch)
    summary = {"uri": batch.document.document_id, "batch": batch.batch, "committed": indexed is not None}
    if indexed is None:
        return StageResult([], summary)
    key = f"{indexed.document_id}#{indexed.version}"
    return StageResult([OutboundEvent(events.DOCUMENT_INDEXED, indexed, key=key, subject=indexed.document_id)],
                       summary)


def remove_document(tomb: DocumentTombstoned, runtime: IngestServices) -> StageResult:
    removed = runtime.index.tombstone(tomb)
    summary = {"uri": tomb.document_id, "removed": removed.chunks_removed if removed else 0, "stale": removed is None}
    if removed is None:
        return StageResult([], summary)
    key = f"{removed.document_id}#{removed.sequence}"
    return StageResult([OutboundEvent(events.DOCUMENT_REMOVED, removed, key=key, subject=removed.document_id)],
                       summary)
