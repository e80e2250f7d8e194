"""What every index backend shares: collection names, the ledger entry, and the `Index` protocol it implements."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ragfn.core.errors import BadEvent
from ragfn.eventing.events import DocumentIndexed, DocumentRemoved, DocumentTombstoned, EmbeddedBatch

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
PUBLIC = "*"  # the ACL group of a document readable by its whole tenant


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


def check_collection_name(name: str) -> str:
    if not COLLECTION_NAME.match(name):
        raise BadEvent(f"invalid collection name {name!r}",
                       hint="use 1-63 letters, digits, '-' or '_', starting with a letter or digit")
    return name


class Index(Protocol):
    """The write and ledger side of an index, which ingestion, re-sync and uploads use.

    Writes are idempotent per (document, version, chunk) and ordered by the ledger: a batch or tombstone older
    than the committed (sequence, version) returns None and changes nothing. The read side that dense and lexical
    search use is Chroma's own collection today (`ChromaIndex.chunks`); a second backend adds its search here.
    """

    def warm_up(self) -> None: ...

    def exists(self, collection: str) -> bool: ...

    def collections(self) -> list[str]: ...

    def ledger_entry(self, collection: str, document_id: str) -> LedgerEntry | None: ...

    def ledger(self, collection: str) -> Iterator[LedgerEntry]: ...

    def generation(self, collection: str) -> str | None: ...

    def reusable_vectors(self, collection: str, embedder: str, hashes: list[str]) -> dict[str, np.ndarray]: ...

    def write_batch(self, batch: EmbeddedBatch) -> DocumentIndexed | None: ...

    def tombstone(self, event: DocumentTombstoned, *, reason: str = "deleted") -> DocumentRemoved | None: ...

    def stats(self) -> dict[str, dict[str, int]]: ...
