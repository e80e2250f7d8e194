"""How both backends lay out a collection's chunks: one table (a Chroma collection, a Lance table) per tenant.

Every read is one tenant's (`Caller.tenant`), so a tenant's own table answers it and a search costs by the tenant's
rows, not the whole collection's: on one shared table Chroma evaluated its filter on every row (about 2 ms per
1,000 rows), and Lance's prefiltered vector search paid for the whole index (docs/benchmarks.md, "Table layout").
Names, for collection NAME:
- `ragfn-NAME`: the untenanted chunks (a single-tenant install's only table, so its layout is unchanged);
- `ragfn-NAME.t.TENANT`: a tenant whose name is 1-63 lower-case letters, digits, '-' or '_' (starting and ending
  with a letter or digit);
- `ragfn-NAME.h.HASH`: any other tenant, by the SHA-256 of its name: every backend can take that, and the rows keep
  the tenant's own name in their `tenant` column, which every search still filters on;
- `ragfn-NAME.ledger`: the collection's ledger, one for all its tenants (document ids are per collection).

Tables written before this layout kept every tenant in `ragfn-NAME`. Such "shared" rows are still read (merged with
the tenant's table) until the maintenance function has moved them (`move_shared_rows`), so an upgrade loses
nothing and needs no downtime.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable, Iterator
from typing import Protocol

from ragfn.store.base import COLLECTION_NAME, Hit, LedgerEntry, check_collection_name

# lower case only: "Acme" and "acme" would share a folder on a case-insensitive disk (macOS, Windows)
TENANT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")
LEDGER = "ledger"
SHARED_PAGE_ROWS = 2_000  # rows moved out of a shared table per step of maintenance
RECHECK_SECONDS = 30.0  # how often a process looks again whether a collection still has shared rows


def chunk_table_name(collection: str, tenant: str | None) -> str:
    """The table holding one tenant's chunks of a collection."""
    base = f"ragfn-{check_collection_name(collection)}"
    if not tenant:
        return base
    if TENANT_NAME.fullmatch(tenant):  # fullmatch: `$` would let "acme\n" through
        return f"{base}.t.{tenant}"
    return f"{base}.h.{hashlib.sha256(tenant.encode('utf-8', 'surrogatepass')).hexdigest()[:40]}"


def ledger_table_name(collection: str) -> str:
    return f"ragfn-{check_collection_name(collection)}.{LEDGER}"


def _split(name: str) -> tuple[str, str] | None:
    """(collection, part) of a ragfn table name: part "" (untenanted), "ledger" or a tenant's key."""
    if not name.startswith("ragfn-"):
        return None
    collection, _, part = name[len("ragfn-"):].partition(".")
    return (collection, part) if COLLECTION_NAME.fullmatch(collection) else None


def collections_of(names: Iterable[str]) -> list[str]:
    """The collections that have a chunk table among these table names."""
    return sorted({found[0] for found in map(_split, names) if found and found[1] != LEDGER})


def chunk_tables_of(names: Iterable[str], collection: str) -> list[str]:
    """A collection's chunk tables among these table names: the untenanted (and shared) one first."""
    found = [name for name in names if (split := _split(name)) and split[0] == collection and split[1] != LEDGER]
    return sorted(found, key=lambda name: (name != f"ragfn-{collection}", name))


def merge_hits(results: Iterable[list[Hit]], top_k: int) -> list[Hit]:
    """One ranking from a tenant's table and the shared table (while it still holds the tenant's rows)."""
    best: dict[str, Hit] = {}
    for hits in results:
        for hit in hits:
            if hit.chunk_id not in best or hit.score > best[hit.chunk_id].score:
                best[hit.chunk_id] = hit
    return sorted(best.values(), key=lambda hit: -hit.score)[:top_k]


class TableNames:
    """A store's table names, listed at most once per `ttl` seconds: `exists`, `collections` and a collection's
    tables are asked often (each lexical refresh, each upload status poll), and listing costs a request per page of
    tables on a bucket. A table another process creates is seen within `ttl`; one this process creates, at once."""

    def __init__(self, list_all, ttl: float = 1.0) -> None:
        self._list_all, self.ttl = list_all, ttl
        self._names: set[str] = set()
        self._listed: float | None = None

    def get(self) -> set[str]:
        if self._listed is None or time.monotonic() - self._listed >= self.ttl:
            self._names, self._listed = set(self._list_all()), time.monotonic()
        return self._names

    def add(self, name: str) -> None:
        self._names = self._names | {name}


class SharedRows:
    """Per process: which collections' untenanted tables still hold tenants' rows from before this layout. A
    collection found without any keeps that answer (new writes never put a tenant's rows there); one with some is
    looked at again every RECHECK_SECONDS, so readers stop merging soon after maintenance has moved them."""

    def __init__(self, count) -> None:
        self._count = count  # collection -> how many tenanted rows its untenanted table holds
        self._seen: dict[str, float] = {}  # collection -> when shared rows were last seen
        self._clear: set[str] = set()

    def present(self, collection: str) -> bool:
        if collection in self._clear:
            return False
        seen = self._seen.get(collection)
        if seen is not None and time.monotonic() - seen < RECHECK_SECONDS:
            return True
        if self._count(collection):
            self._seen[collection] = time.monotonic()
            return True
        self._clear.add(collection)
        self._seen.pop(collection, None)
        return False

    def forget(self, collection: str) -> None:
        self._clear.discard(collection)
        self._seen.pop(collection, None)


class Movable(Protocol):
    """What `move_shared_rows` needs of a backend."""

    def ledger_entry(self, collection: str, document_id: str, *, latest: bool = False) -> LedgerEntry | None: ...

    def shared_page(self, collection: str, limit: int) -> list[dict]: ...

    def put_rows(self, collection: str, tenant: str, rows: list[dict]) -> None: ...

    def delete_rows(self, collection: str, tenant: str | None, rows: list[dict]) -> None: ...


def move_shared_rows(index: Movable, collection: str, *, limit: int, deadline: float) -> Iterator[int]:
    """Move tenants' rows out of the collection's untenanted table into their own tables, `limit` rows at a time
    until none are left or `deadline` (time.monotonic) passes; yields how many rows each page moved.

    Only rows of a document's committed version move; others (an older version a writer has not yet deleted, an
    uncommitted one) are dropped. A writer may commit a newer version meanwhile, so after copying, the ledger is
    read again and copies that are now older are deleted: the writer deletes older rows after its record, and this
    after its copy, so whichever comes second removes them (the argument of ragfn.store.lance's commits). Every
    delete here names the rows as they were read (id, tenant and label), so a row a writer has relabelled meanwhile
    (a new version sharing its text, a document re-mapped to no tenant) stays.
    """
    while time.monotonic() < deadline:
        page = index.shared_page(collection, limit)
        if not page:
            return
        entries = {doc: index.ledger_entry(collection, doc) for doc in {row["document_id"] for row in page}}
        by_tenant: dict[str, list[dict]] = {}
        for row in page:
            if _is_committed(entries[row["document_id"]], row):
                by_tenant.setdefault(row["tenant"], []).append(row)
        for tenant, rows in by_tenant.items():
            index.put_rows(collection, tenant, rows)
        index.delete_rows(collection, None, page)
        for tenant, rows in by_tenant.items():
            documents = {row["document_id"] for row in rows}
            now = {doc: index.ledger_entry(collection, doc, latest=True) for doc in documents}
            stale = [row for row in rows if not _is_committed(now[row["document_id"]], row)]
            if stale:
                index.delete_rows(collection, tenant, stale)
        yield sum(len(rows) for rows in by_tenant.values())


def _is_committed(entry: LedgerEntry | None, row: dict) -> bool:
    return (entry is not None and entry.state == "indexed" and (entry.tenant or "") == row["tenant"]
            and (entry.sequence, entry.version) == (row["sequence"], row["version"]))


def by_label(rows: list[dict]) -> dict[tuple[str, str, str], list[str]]:
    """Row ids grouped by (tenant, sequence, version): a conditional delete per group."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        groups.setdefault((row["tenant"], row["sequence"], row["version"]), []).append(row["id"])
    return groups
