"""Chroma's side of the index: the client from settings, the caller's filter, paged reads, and the shapes of the
chunk metadata and ledger records ChromaIndex writes."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlparse

import numpy as np

from ragfn.core.config import Settings
from ragfn.core.errors import ConfigError, Unavailable
from ragfn.eventing.events import Chunk, DocumentVersion
from ragfn.store.base import PUBLIC, Caller, Hit, LedgerEntry

GENERATION_ID = "~generation"  # ledger records no document URI can collide with (one per tenant, and one for all)


def connect(settings: Settings):
    """Embedded `PersistentClient` under RAGFN_HOME, or `HttpClient` when RAGFN_CHROMA_URL is set."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    # chromadb sends anonymized usage telemetry unless told not to; ragfn's pods and laptops send none
    private = ChromaSettings(anonymized_telemetry=False)
    try:
        if settings.chroma_url:
            url = urlparse(settings.chroma_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ConfigError(f"RAGFN_CHROMA_URL={settings.chroma_url!r} is not an http(s) URL")
            return chromadb.HttpClient(host=url.hostname, port=url.port or (443 if url.scheme == "https" else 80),
                                       ssl=url.scheme == "https", settings=private)
        settings.chroma_path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(settings.chroma_path), settings=private)
    except (ValueError, ConnectionError, OSError) as exc:
        raise Unavailable(f"cannot reach Chroma ({settings.chroma_url or settings.chroma_path}): {exc}",
                          hint="start it with `chroma run` or unset RAGFN_CHROMA_URL for embedded mode") from exc


def read_pages(collection, include: list[str], page_rows: int = 10_000, where: dict | None = None) -> Iterator[dict]:
    """Every row of a Chroma collection, `page_rows` at a time. One unbounded `get()` fails past 32,766 rows on
    embedded Chroma (one SQLite variable per row) and holds a whole large collection twice in memory."""
    offset = 0
    while True:
        page = collection.get(include=include, limit=page_rows, offset=offset, where=where)
        if page["ids"]:
            yield page
        if len(page["ids"]) < page_rows:
            return
        offset += page_rows


def where(caller: Caller) -> dict:
    """A Chroma filter: the caller's tenant, and a document group the caller has (or the public group)."""
    readable = [{"groups": {"$contains": group}} for group in caller.readable_groups()]
    return {"$and": [{"tenant": caller.tenant or ""}, readable[0] if len(readable) == 1 else {"$or": readable}]}


def query(chunks, vector: np.ndarray, n: int, where: dict | None) -> list[Hit]:
    found = chunks.query(query_embeddings=[vector], n_results=n, where=where,
                         include=["documents", "metadatas", "distances"])
    return [Hit(chunk_id=i, source=m["source"], text=d, score=1.0 - float(dist), metadata=m)
            for i, d, m, dist in zip(found["ids"][0], found["documents"][0], found["metadatas"][0],
                                     found["distances"][0], strict=True)]


def generation_id(tenant: str | None) -> str:
    return f"{GENERATION_ID}:{tenant or ''}"


def entry_from(document_id: str, meta: dict) -> LedgerEntry:
    return LedgerEntry(document_id, meta["version"], meta["sequence"], meta["state"], int(meta["chunks"]),
                       meta.get("tenant") or None, meta.get("chunking") or "")


def ledger_metadata(entry: LedgerEntry) -> dict:
    return {"version": entry.version, "sequence": entry.sequence, "state": entry.state, "chunks": entry.chunks,
            "tenant": entry.tenant or "", "chunking": entry.chunking}


def chunk_metadata(doc: DocumentVersion, chunk: Chunk) -> dict:
    return {
        "document_id": doc.document_id, "source": doc.document_id, "version": doc.version,
        "sequence": doc.sequence, "number": chunk.number, "start": chunk.start, "end": chunk.end,
        "heading_path": " > ".join(chunk.heading_path), "content_hash": chunk.content_hash,
        "tokens": chunk.tokens, "tenant": doc.tenant or "", "groups": list(doc.groups) or [PUBLIC],
        "content_type": doc.content_type or "",
    }
