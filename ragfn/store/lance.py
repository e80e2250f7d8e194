"""The LanceDB index: the cluster store, on a folder or an object-store bucket (S3, GCS, MinIO).

Each user collection NAME is a Lance table of chunks per tenant (`ragfn-NAME`, `ragfn-NAME.t.TENANT`:
ragfn.store.partitions; one row per document, content hash and occurrence, keyed like Chroma's rows) and
`ragfn-NAME.ledger`, one row per document: its committed version and sequence, or its tombstone. Every replica of
the index and retrieve functions reads and writes the same tables; there is no server. The tenant is also an
indexed column (BITMAP), the ACL groups a LABEL_LIST, the document id a BTREE, and the text has an FTS index with
English stemming, so every search applies the caller's filter before its top-k.

Writes and concurrency. Lance commits are atomic and optimistic: a writer whose commit conflicts with another's
re-reads and retries (`merge_insert` does so by itself). Ordering does not depend on who commits first:
- a chunk row is inserted, or relabelled, only where its stored (sequence, version) is not newer than the batch's:
  the condition is part of the one `merge_insert`, so an older version's relabel never overwrites a newer label;
- the ledger row is written with the same condition, so a late older commit or tombstone changes nothing;
- after its ledger write a writer reads the ledger back. If a newer version (or a delete) won, it deletes the rows
  that carry its own label; if it won, it deletes every row labelled older than itself. Deleting after the record,
  never before, is what makes this hold: a loser's rows were all written before its record, so either the winner's
  delete comes later and takes them, or the loser's read-back comes later and sees the winner. Both the read-back
  and the winner's delete work on the tables' latest versions (`checkout_latest`): a replica's reads may otherwise
  be RAGFN_LANCEDB_REFRESH_SECONDS old, and a Lance delete removes only rows of the version it read (rows another
  writer appended meanwhile survive it), which let a loser's row outlive a race on moto's S3.
So the rows left are the newest committed version's, whatever the interleaving. The winner deletes in its tenant's
table and in that of the tenant its `before` read names. Two interleavings escape that while an operator re-maps a
document's tenant (an older version recording between the newer one's `before` read and its record, a delete racing
an uncommitted version of another tenant), and a writer that dies after writing rows of a version that has lost
leaves them too: maintenance sweeps such rows (ragfn.store.orphans). Rows of a version whose writer died before its
record are removed by the document's next commit or tombstone (as on Chroma).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import numpy as np

from ragfn.core.config import Settings
from ragfn.core.errors import BadEvent
from ragfn.eventing.events import DocumentIndexed, DocumentRemoved, DocumentTombstoned, DocumentVersion, EmbeddedBatch
from ragfn.store.base import Caller, Hit, LedgerEntry, Rows, check_collection_name
from ragfn.store.lance_tables import (
    CHUNK_COLUMNS,
    chunk_row,
    chunk_schema,
    connect,
    embedder_of,
    ensure_indexes,
    entry_from,
    guarded,
    hit_from,
    is_not_older,
    ledger_schema,
    maintain_table,
    metadata_of,
    older_than,
    readable_by,
    sql,
    version_label,
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


class LanceIndex:  # implements ragfn.store.base.Index
    """LanceDB at RAGFN_LANCEDB_URI (a folder under RAGFN_HOME by default)."""

    full_text = True  # Lance's own BM25 (FTS index, English stemming) answers lexical search
    concurrent_writers = True  # any number of index replicas, in any process (see the module's docstring)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._db = None
        self._connecting = threading.Lock()
        self._handles: dict[str, object] = {}  # open table handles by table name
        self._indexed: set[str] = set()  # tables whose scalar and FTS indexes are known to exist
        self._shared = SharedRows(self._count_shared)
        self._listing = TableNames(self._list_tables)

    @property
    def db(self):
        if self._db is None:
            with self._connecting:
                if self._db is None:
                    self._db = connect(self.settings)
        return self._db

    def warm_up(self) -> None:
        """Connects and lists the tables: a bad URI, an unreachable bucket or refused credentials fail here."""
        with guarded("cannot reach LanceDB", setting=True):
            self.collections()

    # -- tables --------------------------------------------------------------------------------------------

    def _open(self, name: str):
        """The table, or None when it does not exist yet."""
        table = self._handles.get(name)
        if table is None:
            try:
                table = self._handles[name] = self.db.open_table(name)
            except ValueError as exc:
                if "was not found" in str(exc):
                    return None
                raise
        return table

    def _create(self, name: str, schema):
        try:
            table = self.db.create_table(name, schema=schema, exist_ok=True)
        except ValueError as exc:
            raise BadEvent(f"LanceDB cannot take the table name {name!r}: {exc}") from exc
        self._handles[name] = table
        self._listing.add(name)
        return table

    def chunk_table(self, collection: str, tenant: str | None = None, *, embedder: str | None = None,
                    dimensions: int | None = None):
        """A tenant's chunk table (ragfn.store.partitions); created (for this embedder and dimension) only when both
        are given. Every table of a collection holds one embedder's vectors, so any tenant's query compares."""
        name = chunk_table_name(collection, tenant)
        table = self._open(name)
        if table is None and embedder and dimensions:
            stored = self._embedder_of(collection)
            if stored and stored != embedder:
                raise BadEvent(f"collection {collection!r} holds vectors from {stored!r}, not {embedder!r}",
                               hint="use another collection, or re-ingest everything with the collection's embedder")
            table = self._create(name, chunk_schema(dimensions, embedder))
        if table is not None and embedder:
            stored = embedder_of(table)
            if stored and stored != embedder:
                raise BadEvent(f"collection {collection!r} holds vectors from {stored!r}, not {embedder!r}",
                               hint="use another collection, or re-ingest everything with the collection's embedder")
        return table

    def _embedder_of(self, collection: str) -> str | None:
        for name in chunk_tables_of(self._names(), collection):
            if (table := self._open(name)) is not None and (stored := embedder_of(table)):
                return stored
        return None

    def _ledger(self, collection: str, *, create: bool = False):
        name = ledger_table_name(collection)
        table = self._open(name)
        return self._create(name, ledger_schema()) if table is None and create else table

    def _names(self) -> set[str]:
        return self._listing.get()

    def _list_tables(self) -> list[str]:
        names, token = [], None
        while True:
            page = self.db.list_tables(page_token=token, limit=1000)
            names += page.tables
            token = page.page_token
            if not token or not page.tables:
                return names

    def _tables(self, collection: str) -> list:
        names = chunk_tables_of(self._names(), check_collection_name(collection))
        return [table for name in names if (table := self._open(name)) is not None]

    def _holding(self, collection: str, *tenants: str | None) -> list:
        """The tables a document's rows can be in: its tenants' (old and new, when its tenant changed), and the
        shared table while it has rows."""
        names = {chunk_table_name(collection, tenant) for tenant in tenants}
        if self._shared.present(collection):
            names.add(chunk_table_name(collection, None))
        return [table for name in sorted(names) if (table := self._open(name)) is not None]

    def _reading(self, collection: str, caller: Caller) -> list:
        """The tables a caller's search reads: their tenant's, and the shared one while it holds tenants' rows."""
        names = [chunk_table_name(collection, caller.tenant)]
        if caller.tenant and self._shared.present(collection):
            names.append(chunk_table_name(collection, None))
        return [table for name in names if (table := self._open(name)) is not None]

    def exists(self, collection: str) -> bool:
        with guarded("vector store unavailable"):
            return check_collection_name(collection) in self.collections()

    def collections(self) -> list[str]:
        return collections_of(self._names())

    # -- ledger --------------------------------------------------------------------------------------------

    def ledger_entry(self, collection: str, document_id: str, *, latest: bool = False) -> LedgerEntry | None:
        """The document's record; `latest` reads the ledger's newest version, not one up to
        RAGFN_LANCEDB_REFRESH_SECONDS old (the read-backs that decide who won need it)."""
        ledger = self._ledger(collection)
        if ledger is None:
            return None
        if latest:
            ledger.checkout_latest()
        found = ledger.search().where(f"document_id = {sql(document_id)}").limit(1).to_list()
        return entry_from(found[0]) if found else None

    def ledger(self, collection: str) -> Iterator[LedgerEntry]:
        ledger = self._ledger(collection)
        if ledger is None:
            return
        for batch in ledger.search().limit(None).to_batches(10_000):
            yield from (entry_from(row) for row in batch.to_pylist())

    def generation(self, collection: str, tenant: str | None = None) -> str | None:
        ledger = self._ledger(collection)
        return None if ledger is None else str(ledger.version)

    def _record(self, collection: str, entry: LedgerEntry) -> None:
        import pyarrow as pa

        row = {"document_id": entry.document_id, "version": entry.version, "sequence": entry.sequence,
               "state": entry.state, "chunks": entry.chunks, "tenant": entry.tenant or "", "chunking": entry.chunking}
        ledger = self._ledger(collection, create=True)
        (ledger.merge_insert("document_id").when_matched_update_all(where=is_not_older("target", "source"))
         .when_not_matched_insert_all().execute(pa.Table.from_pylist([row], schema=ledger_schema())))
        self._ensure_indexes(ledger, ledger=True)

    # -- writes ----------------------------------------------------------------------------------------------

    def reusable_vectors(self, collection: str, embedder: str, hashes: list[str],
                         tenant: str | None = None) -> dict[str, np.ndarray]:
        table = self.chunk_table(collection, tenant) if hashes else None
        if table is None or embedder_of(table) != embedder:
            return {}
        wanted = ", ".join(sql(h) for h in sorted(set(hashes)))
        found = (table.search().where(f"content_hash IN ({wanted})").select(["content_hash", "vector"])
                 .limit(None).to_list())
        return {row["content_hash"]: np.asarray(row["vector"], dtype=np.float32) for row in found}

    def write_batch(self, batch: EmbeddedBatch) -> DocumentIndexed | None:
        """Upsert one batch; commit the version when all its chunks are present. None while incomplete or stale."""
        import pyarrow as pa

        doc = batch.document
        if len(batch.vectors) != len(batch.chunks):
            raise BadEvent(f"batch has {len(batch.chunks)} chunks but {len(batch.vectors)} vectors")
        vectors = [decode_vector(v, batch.dimensions) for v in batch.vectors]  # all valid before any write
        with guarded("vector store unavailable"):
            entry = self.ledger_entry(doc.collection, doc.document_id)
            if entry and entry.is_newer_than(doc.sequence, doc.version):
                return None  # a newer version (or a later delete) is already committed
            table = self.chunk_table(doc.collection, doc.tenant, embedder=batch.embedder, dimensions=batch.dimensions)
            if table.schema.field("vector").type.list_size != batch.dimensions:
                raise BadEvent(f"collection {doc.collection!r} holds {table.schema.field('vector').type.list_size}"
                               f"-dimensional vectors, not {batch.dimensions}")
            rows = [chunk_row(doc, chunk, vector) for chunk, vector in zip(batch.chunks, vectors, strict=True)]
            # insert new rows; relabel a stored row only when its label is not newer than this batch's. On the
            # table's latest version: matched against a replica's older one, a row another writer has put there
            # meanwhile would be inserted a second time, under this (possibly losing) label
            table.checkout_latest()
            (table.merge_insert("id").when_matched_update_all(where=is_not_older("target", "source"))
             .when_not_matched_insert_all().execute(pa.Table.from_pylist(rows, schema=table.schema)))
            self._ensure_indexes(table)
            present = table.count_rows(version_label(doc))
            if present < batch.total_chunks:
                return None
            return self._commit(doc, batch.total_chunks)

    def _ensure_indexes(self, table, *, ledger: bool = False) -> None:
        if table.name not in self._indexed:
            ensure_indexes(table, ledger=ledger)
            self._indexed.add(table.name)

    def _commit(self, doc: DocumentVersion, total: int) -> DocumentIndexed | None:
        # Record first, then read the ledger back: the winner deletes every row labelled older than itself only
        # after its record, so rows a loser wrote before its own (failed or overtaken) record cannot outlive it,
        # and a loser, seeing the newer record, deletes the rows labelled with its own version.
        table = self.chunk_table(doc.collection, doc.tenant)
        before = self.ledger_entry(doc.collection, doc.document_id)
        if not (before and before.is_newer_than(doc.sequence, doc.version)):
            self._record(doc.collection, LedgerEntry(doc.document_id, doc.version, doc.sequence, "indexed", total,
                                                     doc.tenant, doc.chunking or ""))
        after = self.ledger_entry(doc.collection, doc.document_id, latest=True)
        if after is None or (after.sequence, after.version) != (doc.sequence, doc.version):
            table.checkout_latest()  # a delete removes only the rows of the version it read
            table.delete(version_label(doc))  # a newer version or delete won: this version's rows must not stay
            return None
        for holding in self._holding(doc.collection, doc.tenant, *([before.tenant] if before else [])):
            holding.checkout_latest()  # a delete removes only the rows of the version it read
            holding.delete(f"document_id = {sql(doc.document_id)} AND {older_than(doc.sequence, doc.version)}")
        replaced = [before.version] if before and before.state == "indexed" and before.version != doc.version else []
        return DocumentIndexed(collection=doc.collection, document_id=doc.document_id, version=doc.version,
                               sequence=doc.sequence, chunks=total, tenant=doc.tenant, replaced_versions=replaced)

    def tombstone(self, event: DocumentTombstoned, *, reason: str = "deleted") -> DocumentRemoved | None:
        """Remember the delete, then delete every chunk at or before its sequence (recorded first, as a commit)."""
        with guarded("vector store unavailable"):
            entry = self.ledger_entry(event.collection, event.document_id)
            if entry and entry.sequence > event.sequence:
                return None  # re-created after this delete: the delete is stale
            # version "~" sorts after every hex/etag version, so no upsert with the same sequence beats it
            self._record(event.collection, LedgerEntry(event.document_id, "~", event.sequence, "deleted", 0,
                                                       entry.tenant if entry else None))
            after = self.ledger_entry(event.collection, event.document_id, latest=True)
            if after is None or after.sequence > event.sequence:
                return None  # a re-creation committed meanwhile
            # a duplicate delivery finds nothing left, and still answers to heal a lost reply
            doomed, removed = f"document_id = {sql(event.document_id)} AND sequence <= {sql(event.sequence)}", 0
            for table in self._holding(event.collection, entry.tenant) if entry else self._tables(event.collection):
                table.checkout_latest()
                found = table.count_rows(doomed)
                if found:
                    table.delete(doomed)
                removed += found
        return DocumentRemoved(collection=event.collection, document_id=event.document_id, sequence=event.sequence,
                               chunks_removed=removed, reason=reason)

    # -- reads -------------------------------------------------------------------------------------------------

    def version_rows(self, collection: str, document_id: str, version: str, tenant: str | None = None) -> int:
        table = self.chunk_table(collection, tenant)
        if table is None:
            return 0
        return table.count_rows(f"document_id = {sql(document_id)} AND version = {sql(version)}")

    def rows(self, collection: str, *, page_rows: int = 10_000) -> Iterator[Rows]:
        for table in self._tables(collection):
            for batch in table.search().select(["id", "text", *CHUNK_COLUMNS]).limit(None).to_batches(page_rows):
                found = batch.to_pylist()
                yield Rows([r["id"] for r in found], [r["text"] for r in found], [metadata_of(r) for r in found])

    def tenant_rows(self, collection: str, tenant: str | None, *, page_rows: int = 10_000) -> Iterator[Rows]:
        """One tenant's rows: its table, and its rows in the shared table until they are moved (the untenanted
        table holds other tenants' rows until then)."""
        tables = [(self.chunk_table(collection, tenant), "tenant = ''" if not tenant else None)]
        if tenant and self._shared.present(collection):
            tables.append((self.chunk_table(collection), f"tenant = {sql(tenant)}"))
        for table, where in tables:
            if table is None:
                continue
            query = table.search().select(["id", "text", *CHUNK_COLUMNS]).limit(None)
            for batch in (query.where(where) if where else query).to_batches(page_rows):
                found = batch.to_pylist()
                yield Rows([r["id"] for r in found], [r["text"] for r in found], [metadata_of(r) for r in found])

    def dense_search(self, collection: str, vector: np.ndarray, *, top_k: int, caller: Caller) -> list[Hit]:
        with guarded("vector store unavailable"):
            query = np.asarray(vector, dtype=np.float32)
            return merge_hits(([hit_from(row, 1.0 - float(row["_distance"])) for row in (
                table.search(query, vector_column_name="vector").distance_type("cosine")
                .where(readable_by(caller), prefilter=True).limit(top_k)
                .select(["id", "text", *CHUNK_COLUMNS, "_distance"]).to_list())]
                for table in self._reading(collection, caller)), top_k)

    def lexical_search(self, collection: str, question: str, *, top_k: int, caller: Caller) -> list[Hit]:
        with guarded("lexical search unavailable"):
            results = []
            for table in self._reading(collection, caller):
                self._ensure_indexes(table)  # a table written by an older ragfn, or whose writer died before indexing
                results.append([hit_from(row, float(row["_score"])) for row in (
                    table.search(question, query_type="fts", fts_columns="text")
                    .where(readable_by(caller), prefilter=True).limit(top_k)
                    .select(["id", "text", *CHUNK_COLUMNS, "_score"]).to_list())])
            return merge_hits(results, top_k)

    # -- maintenance -----------------------------------------------------------------------------------------

    def maintain(self, collection: str, *, keep_versions: timedelta, deadline: float | None = None) -> dict:
        """Per table of the collection: compaction, indexes brought up to date (the rows written since are searched
        flat until then), a vector index once the table is large enough, and versions older than `keep_versions`
        removed; first, rows from before the table-per-tenant layout move to their tenants' tables (until
        `deadline`). Readers are on the newest version within RAGFN_LANCEDB_REFRESH_SECONDS; `keep_versions` leaves
        a slow query its files."""
        report: dict = {"collection": collection, "rows": 0, "unindexed_rows": 0, "versions_removed": 0}
        with guarded("LanceDB maintenance failed"):
            started = time.monotonic()
            report["shared_rows_moved"] = sum(move_shared_rows(
                self, collection, limit=SHARED_PAGE_ROWS,
                deadline=deadline if deadline is not None else started + 60))
            if report["shared_rows_moved"]:
                self._shared.forget(collection)
            report["orphan_rows_removed"] = sum(n for _, n in sweep_orphans(
                self, collection, deadline=deadline if deadline is not None else started + 60))
            tables = self._tables(collection)
            report["tables"] = len(tables)
            indexes = optimize = 0.0
            for table in tables:
                self._indexed.discard(table.name)
                done = maintain_table(table, vector_index_rows=self.settings.lancedb_vector_index_rows,
                                      keep_versions=keep_versions)
                self._indexed.add(table.name)
                for key in ("rows", "unindexed_rows", "versions_removed"):
                    report[key] += done[key]
                if done["vector_index_created"]:
                    report["vector_index_created"] = True
                indexes, optimize = indexes + done["indexes_seconds"], optimize + done["optimize_seconds"]
            ledger = self._ledger(collection)
            if ledger is not None:
                started = time.monotonic()
                self._indexed.discard(ledger.name)
                self._ensure_indexes(ledger, ledger=True)
                ledger.optimize(cleanup_older_than=keep_versions)
                optimize += time.monotonic() - started
            report |= {"indexes_seconds": round(indexes, 3), "optimize_seconds": round(optimize, 3)}
        return report

    def stats(self) -> dict[str, dict[str, int]]:
        result = {}
        for name in self.collections():
            documents = sum(1 for e in self.ledger(name) if e.state == "indexed")
            result[name] = {"documents": documents, "chunks": sum(t.count_rows() for t in self._tables(name))}
        return result

    # -- moving shared rows (ragfn.store.partitions.Movable) -------------------------------------------------

    def _count_shared(self, collection: str) -> int:
        shared = self._open(chunk_table_name(collection, None))
        return 0 if shared is None else shared.count_rows("tenant != ''")

    def label_pages(self, collection: str, *, page_rows: int = 50_000) -> Iterator[tuple[bool, list[dict]]]:
        base = chunk_table_name(collection, None)
        for table in self._tables(collection):
            table.checkout_latest()
            for batch in table.search().select(["id", *LABEL_COLUMNS]).limit(None).to_batches(page_rows):
                yield table.name == base, batch.to_pylist()

    def shared_page(self, collection: str, limit: int) -> list[dict]:
        shared = self._open(chunk_table_name(collection, None))
        return [] if shared is None else shared.search().where("tenant != ''").limit(limit).to_list()

    def put_rows(self, collection: str, tenant: str, rows: list[dict]) -> None:
        """Copies rows into the tenant's table, never over a row labelled newer (a version written meanwhile)."""
        import pyarrow as pa

        shared = self._open(chunk_table_name(collection, None))
        table = self.chunk_table(collection, tenant, embedder=embedder_of(shared),
                                 dimensions=shared.schema.field("vector").type.list_size)
        (table.merge_insert("id").when_matched_update_all(where=is_not_older("target", "source"))
         .when_not_matched_insert_all().execute(pa.Table.from_pylist(rows, schema=table.schema)))
        self._ensure_indexes(table)

    def delete_rows(self, collection: str, tenant: str | None, rows: list[dict]) -> None:
        """Deletes these rows only where they still carry the tenant and label they were read with."""
        table = self._open(chunk_table_name(collection, tenant))
        if table is not None:
            table.checkout_latest()  # a delete removes only the rows of the version it read
            table.delete(" OR ".join(
                f"(id IN ({', '.join(sql(i) for i in ids)}) AND tenant = {sql(owner)} AND sequence = {sql(sequence)}"
                f" AND version = {sql(version)})" for (owner, sequence, version), ids in by_label(rows).items()))
