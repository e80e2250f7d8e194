"""The Chroma index: idempotent chunk writes, one ledger entry per document, newest version wins.

Each user collection NAME is a Chroma collection of chunks per tenant (`ragfn-NAME`, `ragfn-NAME.t.TENANT`:
ragfn.store.partitions) and `ragfn-NAME.ledger`, one record per document: its committed version and sequence, or
its tombstone. A chunk row is keyed by document, content hash and occurrence, and labelled with the newest version
that contains it: a new version relabels the rows it shares with the old one (a cheap metadata update) and writes
only rows for changed text.
The ledger is what makes late and duplicate deliveries harmless: a batch or delete whose (sequence, version)
is older than the ledger's is dropped, no row is relabelled to an older version, and a version is committed
only once all its chunks carry its label. Chroma has no transactions or conditional writes, so writes are
serialised inside one index replica (its request threads); two replicas writing two versions of one
document at the same instant can still race, so Chroma deployments run one index replica (LanceDB's writers need
no such limit: ragfn.store.lance).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import numpy as np

from ragfn.core.config import Settings
from ragfn.core.errors import BadEvent, RagfnError, Unavailable
from ragfn.eventing.events import (
    DocumentIndexed,
    DocumentRemoved,
    DocumentTombstoned,
    DocumentVersion,
    EmbeddedBatch,
)
from ragfn.store.base import Caller, Hit, LedgerEntry, Rows, check_collection_name, row_id
from ragfn.store.chroma_tables import (
    GENERATION_ID,
    chunk_metadata,
    connect,
    entry_from,
    generation_id,
    ledger_metadata,
    query,
    read_pages,
    where,
)
from ragfn.store.orphans import LABEL_COLUMNS, sweep_orphans
from ragfn.store.partitions import (
    SHARED_PAGE_ROWS,
    SharedRows,
    TableNames,
    by_label,
    chunk_table_name,
    chunk_tables_of,
    collections_of,
    ledger_table_name,
    merge_hits,
    move_shared_rows,
)
from ragfn.store.vectors import decode_vector


class ChromaIndex:  # implements ragfn.store.base.Index
    """Embedded `PersistentClient` under RAGFN_HOME, or `HttpClient` when RAGFN_CHROMA_URL is set."""

    full_text = False  # lexical search is ragfn's BM25 over `rows` (ragfn.retrieval.lexical)
    concurrent_writers = False  # one index replica, whose threads' writes are serialised

    def __init__(self, settings: Settings, *, overfetch: int = 4) -> None:
        self.settings = settings
        self.overfetch = overfetch  # unfiltered candidates per wanted hit before the filtered query is needed
        self._client = None
        self._connecting = threading.Lock()
        self._handles: dict[str, object] = {}  # Chroma collection handles by Chroma name: one lookup each
        # one writer at a time: Chroma (SQLite underneath when embedded) serialises writes anyway
        self._writing = threading.Lock()
        self._shared = SharedRows(self._count_shared)
        self._listing = TableNames(self._list_collections)

    @property
    def client(self):
        if self._client is None:
            with self._connecting:  # several request threads may arrive first together
                if self._client is None:
                    self._client = connect(self.settings)
        return self._client

    def warm_up(self) -> None:
        self.client.heartbeat()

    # -- tables (Chroma collections): one per tenant, see ragfn.store.partitions -----------------------------

    def chunks(self, collection: str, tenant: str | None = None, *, embedder: str | None = None,
               dimensions: int | None = None):
        """A tenant's chunk table, created on first use; when an embedder is given, checked (or recorded)."""
        found = self._handle(chunk_table_name(collection, tenant), {"hnsw:space": "cosine"})
        stored = (found.metadata or {}).get("ragfn:embedder")
        if embedder and not stored:
            stored = self._embedder_of(collection)
            if not stored or stored == embedder:
                found.modify(metadata={"ragfn:embedder": embedder, "ragfn:dimensions": dimensions})
        if embedder and stored and stored != embedder:
            raise BadEvent(f"collection {collection!r} holds vectors from {stored!r}, not {embedder!r}",
                           hint="use another collection, or re-ingest everything with the collection's embedder")
        return found

    def _find(self, name: str):
        """A table's handle, or None when it does not exist: reads never create one. One lookup by name (not a
        listing) for a table that does not exist yet, so another process's new table is found at once."""
        if name not in self._handles:
            from chromadb.errors import NotFoundError

            try:
                self._handles[name] = self.client.get_collection(name, embedding_function=None)
            except NotFoundError:
                return None
        return self._handles[name]

    def _embedder_of(self, collection: str) -> str | None:
        """The embedder of the collection's other tables: every tenant's vectors must be comparable to a query."""
        for name in chunk_tables_of(self._names(), collection):
            stored = (self._find(name).metadata or {}).get("ragfn:embedder")
            if stored:
                return stored
        return None

    def _ledger(self, collection: str):
        return self._handle(ledger_table_name(collection), None)

    def _handle(self, name: str, metadata: dict | None):
        if name not in self._handles:
            self._handles[name] = self.client.get_or_create_collection(name, metadata=metadata,
                                                                       embedding_function=None)
            self._listing.add(name)
        return self._handles[name]

    def _names(self) -> set[str]:
        return self._listing.get()

    def _list_collections(self) -> list[str]:
        return [c if isinstance(c, str) else c.name for c in self.client.list_collections()]

    def _tables(self, collection: str) -> list:
        return [self._find(name) for name in chunk_tables_of(self._names(), check_collection_name(collection))]

    def exists(self, collection: str) -> bool:
        """Whether the collection holds anything yet; reads must not create it."""
        return check_collection_name(collection) in self.collections()

    def collections(self) -> list[str]:
        return collections_of(self._names())

    # -- ledger --------------------------------------------------------------------------------------------

    def ledger_entry(self, collection: str, document_id: str, *, latest: bool = False) -> LedgerEntry | None:
        # Chroma's reads are always its latest state: `latest` changes nothing here
        found = self._ledger(collection).get(ids=[document_id], include=["metadatas"])
        if not found["ids"]:
            return None
        return entry_from(document_id, found["metadatas"][0])

    def ledger(self, collection: str) -> Iterator[LedgerEntry]:
        for page in read_pages(self._ledger(collection), ["metadatas"]):
            for document_id, meta in zip(page["ids"], page["metadatas"], strict=True):
                if not document_id.startswith(GENERATION_ID):
                    yield entry_from(document_id, meta)

    def _record(self, collection: str, entry: LedgerEntry) -> None:
        self._ledger(collection).upsert(ids=[entry.document_id], embeddings=[[1.0]], metadatas=[ledger_metadata(entry)])

    def _bump(self, collection: str, *tenants: str | None) -> None:
        """New generations for these tenants (every tenant when none is named), after the last write of a commit or
        delete: readers that cache (BM25, per tenant) rebuild what changed and nothing else."""
        ids = sorted({generation_id(tenant) for tenant in tenants}) or [GENERATION_ID]
        self._ledger(collection).upsert(ids=ids, embeddings=[[1.0]] * len(ids),
                                        metadatas=[{"token": uuid.uuid4().hex} for _ in ids])

    def generation(self, collection: str, tenant: str | None = None) -> str | None:
        """A token that changes whenever one of the tenant's documents of the collection is committed or deleted."""
        found = self._ledger(collection).get(ids=[GENERATION_ID, generation_id(tenant)], include=["metadatas"])
        tokens = dict(zip(found["ids"], (meta["token"] for meta in found["metadatas"]), strict=True))
        return "/".join(tokens.get(i, "") for i in (GENERATION_ID, generation_id(tenant))) if tokens else None

    # -- writes ----------------------------------------------------------------------------------------------

    def reusable_vectors(self, collection: str, embedder: str, hashes: list[str],
                         tenant: str | None = None) -> dict[str, np.ndarray]:
        """Vectors the tenant already has for these chunk texts, so unchanged chunks are never embedded twice."""
        chunks = self._find(chunk_table_name(collection, tenant)) if hashes else None
        if chunks is None or (chunks.metadata or {}).get("ragfn:embedder") != embedder:
            return {}
        found = chunks.get(where={"content_hash": {"$in": sorted(set(hashes))}}, include=["metadatas", "embeddings"])
        return {meta["content_hash"]: np.asarray(vec, dtype=np.float32)
                for meta, vec in zip(found["metadatas"], found["embeddings"], strict=True)}

    def write_batch(self, batch: EmbeddedBatch) -> DocumentIndexed | None:
        """Upsert one batch; commit the version when all its chunks are present. None while incomplete or stale."""
        with self._writing:
            return self._write_batch(batch)

    def _write_batch(self, batch: EmbeddedBatch) -> DocumentIndexed | None:
        doc = batch.document
        if len(batch.vectors) != len(batch.chunks):
            raise BadEvent(f"batch has {len(batch.chunks)} chunks but {len(batch.vectors)} vectors")
        entry = self.ledger_entry(doc.collection, doc.document_id)
        if entry and entry.is_newer_than(doc.sequence, doc.version):
            return None  # a newer version (or a later delete) is already committed
        vectors = [decode_vector(v, batch.dimensions) for v in batch.vectors]  # all valid before any write
        chunks = self.chunks(doc.collection, doc.tenant, embedder=batch.embedder, dimensions=batch.dimensions)
        ids = [row_id(doc, c) for c in batch.chunks]
        found = chunks.get(ids=ids, include=["metadatas"])
        labels = {i: (m["sequence"], m["version"]) for i, m in zip(found["ids"], found["metadatas"], strict=True)}
        fresh = [k for k, i in enumerate(ids) if i not in labels]
        relabel = [k for k, i in enumerate(ids) if i in labels and labels[i] <= (doc.sequence, doc.version)]
        if fresh:
            chunks.upsert(ids=[ids[k] for k in fresh], embeddings=np.stack([vectors[k] for k in fresh]),
                          documents=[batch.chunks[k].text for k in fresh],
                          metadatas=[chunk_metadata(doc, batch.chunks[k]) for k in fresh])
        if relabel:  # same text, same vector: only the version label and the position move
            chunks.update(ids=[ids[k] for k in relabel],
                          metadatas=[chunk_metadata(doc, batch.chunks[k]) for k in relabel])
        # the exact label: a re-chunk of the same version (new chunking, newer sequence) must not count old rows
        present = chunks.get(where={"$and": [{"document_id": doc.document_id}, {"version": doc.version},
                                             {"sequence": doc.sequence}]}, include=[])
        if len(present["ids"]) < batch.total_chunks:
            return None
        return self._commit(doc, batch.total_chunks)

    def _commit(self, doc: DocumentVersion, total: int) -> DocumentIndexed | None:
        entry = self.ledger_entry(doc.collection, doc.document_id)
        chunks = self.chunks(doc.collection, doc.tenant)
        if entry and entry.is_newer_than(doc.sequence, doc.version):
            chunks.delete(where={"$and": [{"document_id": doc.document_id}, {"version": doc.version}]})
            return None
        # Record first, then delete the document's older rows (in its tenant's table, its previous tenant's, and
        # the shared table), as LanceIndex does: a row moved out of the shared table meanwhile (another process's
        # `maintain`) is then either deleted here or seen as stale by the mover's second ledger read.
        self._record(doc.collection, LedgerEntry(doc.document_id, doc.version, doc.sequence, "indexed", total,
                                                 doc.tenant, doc.chunking or ""))
        for table in self._holding(doc.collection, doc.tenant, *([entry.tenant] if entry else [])):
            existing = table.get(where={"document_id": doc.document_id}, include=["metadatas"])
            stale = [i for i, m in zip(existing["ids"], existing["metadatas"], strict=True)
                     if (m["sequence"], m["version"]) < (doc.sequence, doc.version)]
            if stale:
                table.delete(ids=stale)
        self._bump(doc.collection, doc.tenant, *([entry.tenant] if entry else []))
        replaced = [entry.version] if entry and entry.state == "indexed" and entry.version != doc.version else []
        return DocumentIndexed(collection=doc.collection, document_id=doc.document_id, version=doc.version,
                               sequence=doc.sequence, chunks=total, tenant=doc.tenant, replaced_versions=replaced)

    def tombstone(self, event: DocumentTombstoned, *, reason: str = "deleted") -> DocumentRemoved | None:
        """Delete every chunk at or before the tombstone's sequence and remember the delete."""
        with self._writing:
            return self._tombstone(event, reason)

    def _tombstone(self, event: DocumentTombstoned, reason: str) -> DocumentRemoved | None:
        entry = self.ledger_entry(event.collection, event.document_id)
        if entry and entry.sequence > event.sequence:
            return None  # re-created after this delete: the delete is stale
        # recorded first, then deleted (as a commit); a duplicate delivery finds nothing left to delete, and still
        # answers so a lost reply is healed
        recorded = not (entry and entry.state == "deleted" and entry.sequence == event.sequence)
        if recorded:
            # version "~" sorts after every hex/etag version, so no upsert with the same sequence beats it
            self._record(event.collection, LedgerEntry(event.document_id, "~", event.sequence, "deleted", 0,
                                                       entry.tenant if entry else None))
        removed = 0
        for table in self._holding(event.collection, entry.tenant) if entry else self._tables(event.collection):
            existing = table.get(where={"document_id": event.document_id}, include=["metadatas"])
            doomed = [i for i, m in zip(existing["ids"], existing["metadatas"], strict=True)
                      if m["sequence"] <= event.sequence]
            if doomed:
                table.delete(ids=doomed)
            removed += len(doomed)
        if recorded or removed:
            self._bump(event.collection, *([entry.tenant] if entry else []))
        return DocumentRemoved(collection=event.collection, document_id=event.document_id, sequence=event.sequence,
                               chunks_removed=removed, reason=reason)

    def _holding(self, collection: str, *tenants: str | None) -> list:
        """The tables a document's rows can be in: its tenants' (a document whose tenant changed has rows in
        both until its commit), and the shared table while it has rows."""
        names = {chunk_table_name(collection, tenant) for tenant in tenants}
        if self._shared.present(collection):
            names.add(chunk_table_name(collection, None))
        return [table for name in sorted(names) if (table := self._find(name)) is not None]

    # -- reads -------------------------------------------------------------------------------------------------

    def version_rows(self, collection: str, document_id: str, version: str, tenant: str | None = None) -> int:
        """How many rows carry this version's label so far (a version being written shows its progress)."""
        chunks = self._find(chunk_table_name(collection, tenant))
        if chunks is None:
            return 0
        return len(chunks.get(where={"$and": [{"document_id": document_id}, {"version": version}]}, include=[])["ids"])

    def rows(self, collection: str, *, page_rows: int = 10_000) -> Iterator[Rows]:
        for table in self._tables(collection):
            for page in read_pages(table, ["documents", "metadatas"], page_rows):
                yield Rows(page["ids"], page["documents"], page["metadatas"])

    def tenant_rows(self, collection: str, tenant: str | None, *, page_rows: int = 10_000) -> Iterator[Rows]:
        """One tenant's rows: its table, and its rows in the shared table until they are moved (the untenanted
        table holds other tenants' rows until then, which the untenanted snapshot must not hold)."""
        own = self._find(chunk_table_name(collection, tenant))
        mine = {"tenant": ""} if not tenant and self._shared.present(collection) else None
        if own is not None:
            for page in read_pages(own, ["documents", "metadatas"], page_rows, where=mine):
                yield Rows(page["ids"], page["documents"], page["metadatas"])
        shared = self._find(chunk_table_name(collection, None)) if tenant else None
        if shared is not None and self._shared.present(collection):
            for page in read_pages(shared, ["documents", "metadatas"], page_rows, where={"tenant": tenant}):
                yield Rows(page["ids"], page["documents"], page["metadatas"])

    def dense_search(self, collection: str, vector: np.ndarray, *, top_k: int, caller: Caller) -> list[Hit]:
        try:
            tables = [chunk_table_name(collection, caller.tenant)]
            if caller.tenant and self._shared.present(collection):
                tables.append(chunk_table_name(collection, None))
            return merge_hits((self._search(found, vector, top_k, caller) for name in tables
                               if (found := self._find(name)) is not None), top_k)
        except RagfnError:
            raise
        except Exception as exc:  # chromadb raises its own and httpx's errors when the server is away
            raise Unavailable(f"vector store unavailable: {type(exc).__name__}: {exc}") from exc

    def _search(self, chunks, vector: np.ndarray, top_k: int, caller: Caller) -> list[Hit]:
        # Chroma evaluates a `where` on every row before its vector search (about 2 ms per 1000 chunks here,
            # ~200 ms at 100k), while an unfiltered HNSW query stays near 3 ms. So first ask unfiltered for a few
            # times top_k and keep what the caller may read; only when that leaves fewer than top_k (the caller
            # owns a small part of a shared collection) run the filtered query. Either way nothing unreadable is
            # returned or takes a place, and the readable hits come in the same order.
        fetch = min(top_k * self.overfetch, 1000)
        found = query(chunks, vector, fetch, None)
        hits = [hit for hit in found if caller.can_read(hit.metadata)]
        if len(hits) >= top_k or len(found) < fetch:  # enough, or the table had no more to give
            return hits[:top_k]
        return query(chunks, vector, top_k, where(caller))

    def lexical_search(self, collection: str, question: str, *, top_k: int, caller: Caller) -> list[Hit]:
        raise NotImplementedError("Chroma has no full-text index here: ragfn.retrieval.lexical's BM25 reads `rows`")

    def maintain(self, collection: str, *, keep_versions: timedelta, deadline: float | None = None) -> dict:
        """Moves rows from before the table-per-tenant layout into their tenants' tables (until `deadline`); Chroma
        keeps its HNSW index and its SQLite tables up to date as it writes, so there is nothing else to do."""
        pages = move_shared_rows(self, collection, limit=SHARED_PAGE_ROWS,
                                 deadline=deadline if deadline is not None else time.monotonic() + 60)
        moved = steps = 0
        while True:
            with self._writing:  # this replica's writes wait; another process's are ordered by the ledger
                step = next(pages, None)
            if step is None:
                break
            moved, steps = moved + step, steps + 1
        if steps:  # rows moved or dropped: BM25 snapshots must be rebuilt
            self._bump(collection)
            self._shared.forget(collection)
        swept = {}
        for tenant, removed in sweep_orphans(self, collection, deadline=deadline if deadline is not None
                                             else time.monotonic() + 60):
            swept[tenant] = swept.get(tenant, 0) + removed
        if swept:
            self._bump(collection, *swept)
        tables = self._tables(collection)
        return {"collection": collection, "rows": sum(t.count() for t in tables), "tables": len(tables),
                "shared_rows_moved": moved, "orphan_rows_removed": sum(swept.values()), "skipped": "chroma"}

    # -- moving shared rows (ragfn.store.partitions.Movable) -------------------------------------------------

    def _count_shared(self, collection: str) -> int:
        shared = self._find(chunk_table_name(collection, None))
        return 0 if shared is None else len(shared.get(where={"tenant": {"$ne": ""}}, limit=1, include=[])["ids"])

    def label_pages(self, collection: str, *, page_rows: int = 10_000) -> Iterator[tuple[bool, list[dict]]]:
        base = chunk_table_name(collection, None)
        for table in self._tables(collection):
            for page in read_pages(table, ["metadatas"], page_rows):
                yield table.name == base, [{"id": i} | {k: m[k] for k in LABEL_COLUMNS}
                                           for i, m in zip(page["ids"], page["metadatas"], strict=True)]

    def shared_page(self, collection: str, limit: int) -> list[dict]:
        shared = self._find(chunk_table_name(collection, None))
        if shared is None:
            return []
        page = shared.get(where={"tenant": {"$ne": ""}}, limit=limit, include=["documents", "metadatas", "embeddings"])
        return [meta | {"id": i, "text": text, "vector": vector}
                for i, text, meta, vector in zip(page["ids"], page["documents"], page["metadatas"],
                                                 page["embeddings"], strict=True)]

    def put_rows(self, collection: str, tenant: str, rows: list[dict]) -> None:
        """Copies rows into the tenant's table, never over a row a writer has put there meanwhile (its label is
        newer: only committed versions are copied, and writes are serialised with this)."""
        embedder = (self._find(chunk_table_name(collection, None)).metadata or {}).get("ragfn:embedder")
        table = self.chunks(collection, tenant, embedder=embedder, dimensions=len(rows[0]["vector"]))
        present = set(table.get(ids=[row["id"] for row in rows], include=[])["ids"])
        rows = [row for row in rows if row["id"] not in present]
        if rows:
            table.add(ids=[row["id"] for row in rows], embeddings=np.stack([row["vector"] for row in rows]),
                      documents=[row["text"] for row in rows],
                      metadatas=[{k: v for k, v in row.items() if k not in ("id", "text", "vector")} for row in rows])

    def delete_rows(self, collection: str, tenant: str | None, rows: list[dict]) -> None:
        """Deletes these rows only where they still carry the tenant and label they were read with."""
        table = self._find(chunk_table_name(collection, tenant))
        if table is None:
            return
        for (owner, sequence, version), ids in by_label(rows).items():
            table.delete(ids=ids, where={"$and": [{"tenant": owner}, {"sequence": sequence}, {"version": version}]})

    def stats(self) -> dict[str, dict[str, int]]:
        result = {}
        for name in self.collections():
            documents = sum(1 for e in self.ledger(name) if e.state == "indexed")
            result[name] = {"documents": documents, "chunks": sum(t.count() for t in self._tables(name))}
        return result
