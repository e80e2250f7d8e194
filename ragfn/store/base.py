"""What every index backend shares: collection names, the ledger entry, who reads (`Caller`) and what they get
(`Hit`), and the `Index` protocol every backend implements."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import ClassVar, Protocol

import numpy as np

from ragfn.core.errors import BadEvent
from ragfn.eventing.events import (
    Chunk,
    DocumentIndexed,
    DocumentRemoved,
    DocumentTombstoned,
    DocumentVersion,
    EmbeddedBatch,
)

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
PUBLIC = "*"  # the ACL group of a document readable by its whole tenant


@dataclass(frozen=True)
class Caller:
    """Who is asking: a tenant and the ACL groups they belong to. Untenanted callers see untenanted documents."""

    tenant: str | None = None
    groups: tuple[str, ...] = ()

    def readable_groups(self) -> list[str]:
        """The document groups the caller may read: their own and the public group."""
        return sorted({PUBLIC, *self.groups})

    def can_read(self, metadata: dict) -> bool:
        """The filter every backend applies inside its search, for one chunk's metadata."""
        groups = metadata.get("groups") or [PUBLIC]
        return metadata.get("tenant", "") == (self.tenant or "") and not {PUBLIC, *self.groups}.isdisjoint(groups)


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    source: str
    text: str
    score: float  # cosine similarity for dense hits, BM25 for lexical ones
    metadata: dict = field(default_factory=dict, compare=False)

    def to_json(self) -> dict:
        return {"chunk_id": self.chunk_id, "source": self.source, "text": self.text, "score": round(self.score, 6)}


@dataclass(frozen=True)
class Rows:
    """One page of a collection's chunk rows, as `Index.rows` yields them."""

    ids: list[str]
    texts: list[str]
    metadatas: list[dict]


@dataclass(frozen=True)
class LedgerEntry:
    document_id: str
    version: str
    sequence: str
    state: str  # "indexed" | "deleted"
    chunks: int
    tenant: str | None
    chunking: str = ""  # the chunking the indexed chunks were cut with ("" before it was recorded)

    def is_newer_than(self, sequence: str, version: str) -> bool:
        return (self.sequence, self.version) > (sequence, version)


def row_id(document: DocumentVersion, chunk: Chunk) -> str:
    """A chunk row's id, content-addressed within the document, so a row outlives versions that do not change its
    text (both backends key rows so)."""
    return f"{document.document_id}#{chunk.content_hash[:32]}#{chunk.occurrence}"


def check_collection_name(name: str) -> str:
    if not COLLECTION_NAME.fullmatch(name):
        raise BadEvent(f"invalid collection name {name!r}",
                       hint="use 1-63 letters, digits, '-' or '_', starting with a letter or digit")
    return name


class Index(Protocol):
    """What ingestion, re-sync, uploads and retrieval ask of a backend (ChromaIndex, LanceIndex).

    Writes are idempotent per (document, version, chunk) and ordered by the ledger: a batch or tombstone older
    than the committed (sequence, version) returns None and changes nothing. Reads apply the caller's tenant and
    groups inside the search (before the top-k), so an unreadable chunk never takes a place. Each tenant's chunks
    are a table of their own (ragfn.store.partitions), so a search costs by the tenant's rows. A store that cannot be
    reached raises `Unavailable`; a name it cannot take, `BadEvent`.
    """

    # True when the backend has its own full-text index; otherwise ragfn's BM25 (ragfn.retrieval.lexical) searches
    # the rows it reads through `rows`, and `lexical_search` is never called.
    full_text: ClassVar[bool]
    # True when any number of index replicas may write one collection at once; otherwise one replica does, and
    # serialises its own threads' writes.
    concurrent_writers: ClassVar[bool]

    def warm_up(self) -> None: ...

    def exists(self, collection: str) -> bool: ...

    def collections(self) -> list[str]: ...

    # `latest`: the newest committed state, where a backend's reads may lag it (LanceDB's refresh interval)
    def ledger_entry(self, collection: str, document_id: str, *, latest: bool = False) -> LedgerEntry | None: ...

    def ledger(self, collection: str) -> Iterator[LedgerEntry]: ...

    def generation(self, collection: str, tenant: str | None = None) -> str | None: ...

    def reusable_vectors(self, collection: str, embedder: str, hashes: list[str],
                         tenant: str | None = None) -> dict[str, np.ndarray]: ...

    def write_batch(self, batch: EmbeddedBatch) -> DocumentIndexed | None: ...

    def tombstone(self, event: DocumentTombstoned, *, reason: str = "deleted") -> DocumentRemoved | None: ...

    def version_rows(self, collection: str, document_id: str, version: str, tenant: str | None = None) -> int: ...

    def rows(self, collection: str, *, page_rows: int = 10_000) -> Iterator[Rows]: ...

    def tenant_rows(self, collection: str, tenant: str | None, *, page_rows: int = 10_000) -> Iterator[Rows]: ...

    def dense_search(self, collection: str, vector: np.ndarray, *, top_k: int, caller: Caller) -> list[Hit]: ...

    def lexical_search(self, collection: str, question: str, *, top_k: int, caller: Caller) -> list[Hit]: ...

    def maintain(self, collection: str, *, keep_versions: timedelta, deadline: float | None = None) -> dict: ...

    def stats(self) -> dict[str, dict[str, int]]: ...
