"""Maintenance's sweep of orphaned chunk rows: rows no commit or delete will ever remove.

A commit deletes older rows in its own tenant's table and in that of the tenant its ledger read named, and a delete
in the recorded tenant's tables (ragfn.store.lance's docstring argues why that leaves exactly the newest version's
rows). Two interleavings escape it while an operator re-maps a document to another tenant: an older version that
records between the newer one's ledger read and its record keeps its rows in the old tenant's table, and a delete
racing an uncommitted version of another tenant leaves that version's rows. A writer that dies after writing rows
of a version that has since lost leaves them too. Each is readable only by the tenant whose table holds it, yet it
is stale, so the maintenance function sweeps it.

A row is an orphan when its document's record is newer than the row's label. Both backends relabel a row a new
version shares while writing it, before that version's record, so once a record is there every older row is stale:
its commit deletes them too, and whichever delete comes second finds nothing. Rows with no record at all (a
document's first version still being written) stay. Every delete names the rows as they were read (id, tenant and
label), after reading their records again on the latest table version, so a row relabelled meanwhile stays.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Protocol

from ragfn.store.base import LedgerEntry

LABEL_COLUMNS = ("document_id", "tenant", "sequence", "version")


class Sweepable(Protocol):
    """What `sweep_orphans` needs of a backend."""

    def ledger(self, collection: str) -> Iterator[LedgerEntry]: ...

    def ledger_entry(self, collection: str, document_id: str, *, latest: bool = False) -> LedgerEntry | None: ...

    def label_pages(self, collection: str) -> Iterator[tuple[bool, list[dict]]]: ...

    def delete_rows(self, collection: str, tenant: str | None, rows: list[dict]) -> None: ...


def sweep_orphans(index: Sweepable, collection: str, *, deadline: float) -> Iterator[tuple[str | None, int]]:
    """Deletes the collection's orphaned rows, a page at a time until every table is read or `deadline`
    (time.monotonic) passes; yields (the table's tenant, rows deleted) for each page that had some. `label_pages`
    yields pages of one table each, flagged when that is the untenanted table (which may still hold tenants' rows
    from before the table-per-tenant layout)."""
    records = {entry.document_id: entry for entry in index.ledger(collection)}
    for shared, page in index.label_pages(collection):
        if time.monotonic() >= deadline:
            return
        doomed = [row for row in page if orphaned(records.get(row["document_id"]), row)]
        if not doomed:
            continue
        now = {doc: index.ledger_entry(collection, doc, latest=True) for doc in {row["document_id"] for row in doomed}}
        doomed = [row for row in doomed if orphaned(now[row["document_id"]], row)]
        if doomed:
            tenant = None if shared else doomed[0]["tenant"]  # a tenant's table holds that tenant's rows only
            index.delete_rows(collection, tenant, doomed)
            yield tenant, len(doomed)


def orphaned(record: LedgerEntry | None, row: dict) -> bool:
    return record is not None and (record.sequence, record.version) > (row["sequence"], row["version"])
