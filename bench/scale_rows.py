"""bench/scale.py's rows: real chunks and vectors expanded to N rows (synthetic past the real ones), spread over 100
Zipf-sized tenants with ACL groups, written through `write_batch` (timed) or bulk-loaded into the backend's tables."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from query_timing import log

from ragfn.eventing.events import Chunk, DocumentVersion, EmbeddedBatch, sequence_key
from ragfn.retrieval.dense import Caller
from ragfn.store.vectors import encode_vector

TENANTS = 100
SMALL, LARGE = "t19", "t1"  # about 1% and about 19% of the rows
NOISE = 0.02
WRITE_ROWS = 1000
EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class CorpusRows:
    documents: list[tuple[dict, list[dict]]]  # (document record, its chunks), in corpus order
    texts: list[str]
    vectors: np.ndarray

    @classmethod
    def load(cls, corpus, real: int) -> CorpusRows:
        docs = corpus.documents(real)
        picked, total = [], 0
        for doc in docs:
            take = doc["chunks"][:real - total]
            picked.append((doc["document"], take))
            total += len(take)
            if total >= real:
                break
        texts = [c["text"] for _, chunks in picked for c in chunks]
        vectors = corpus.vectors([c["text"] for d in docs for c in d["chunks"]], real)[:len(texts)]
        return cls(picked, texts, vectors)


@dataclass
class Document:
    number: int
    copy: int
    base: int  # index into CorpusRows.documents
    first_row: int  # the base document's first row in CorpusRows.texts
    rows: int
    tenant: str
    groups: list[str]


class Layout:
    def __init__(self, corpus: CorpusRows, rows: int, collection: str) -> None:
        self.corpus, self.total, self.collection = corpus, rows, collection
        weights = 1.0 / np.arange(1, TENANTS + 1)
        targets = weights / weights.sum() * rows
        assigned = np.zeros(TENANTS)
        self.documents: list[Document] = []
        starts = np.cumsum([0] + [len(chunks) for _, chunks in corpus.documents])
        made, copy = 0, 0
        while made < rows:
            for base, (_, chunks) in enumerate(corpus.documents):
                take = min(len(chunks), rows - made)
                tenant = int(np.argmax(targets - assigned))  # the tenant furthest below its share
                assigned[tenant] += take
                n = len(self.documents)
                kind = (n * 2654435761) % 10
                groups = ["*"] if kind < 7 else ["eng"] if kind < 9 else ["hr"]
                self.documents.append(Document(n, copy, base, int(starts[base]), take, f"t{tenant + 1}", groups))
                made += take
                if made >= rows:
                    break
            copy += 1
        self.small_caller = Caller(SMALL, ("eng",))
        self.large_caller = Caller(LARGE, ("eng",))

    def tenant_rows(self) -> dict:
        counts: dict[str, int] = {}
        for doc in self.documents:
            counts[doc.tenant] = counts.get(doc.tenant, 0) + doc.rows
        return {"tenants": len(counts), SMALL: counts.get(SMALL, 0), LARGE: counts.get(LARGE, 0),
                "smallest": min(counts.values()), "documents": len(self.documents)}

    def materialise(self, doc: Document) -> tuple[DocumentVersion, list[Chunk], np.ndarray]:
        record, chunks = self.corpus.documents[doc.base]
        suffix = f" [copy {doc.copy}]" if doc.copy else ""
        uri = record["document_id"] + (f"#copy{doc.copy}" if doc.copy else "")
        version = DocumentVersion(collection=self.collection, document_id=uri, version=record["version"],
                                  sequence=sequence_key(1 + doc.number), tenant=doc.tenant, groups=doc.groups,
                                  content_type=record.get("content_type"), chunking=record.get("chunking"))
        made = []
        for c in chunks[:doc.rows]:
            text = c["text"] + suffix
            made.append(Chunk.model_validate(c | {"text": text,
                                                  "content_hash": hashlib.sha256(text.encode()).hexdigest()}))
        vectors = self.corpus.vectors[doc.first_row:doc.first_row + doc.rows]
        if doc.copy:  # synthetic: the real vector moved a little, deterministically
            noise = np.random.default_rng(doc.number).normal(scale=NOISE, size=vectors.shape).astype(np.float32)
            vectors = vectors + noise
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return version, made, vectors.astype(np.float32)

    def batches(self, doc: Document) -> Iterator[EmbeddedBatch]:
        version, chunks, vectors = self.materialise(doc)
        parts = [(k, chunks[k:k + WRITE_ROWS]) for k in range(0, len(chunks), WRITE_ROWS)]
        for b, (k, part) in enumerate(parts):
            yield EmbeddedBatch(document=version, batch=b, batches=len(parts), total_chunks=len(chunks), chunks=part,
                                embedder=EMBEDDER, dimensions=vectors.shape[1],
                                vectors=[encode_vector(v) for v in vectors[k:k + len(part)]])

    def probe_vector(self) -> np.ndarray:
        # fresh each time: a table copied from another backend's run already holds that run's probe
        vector = np.random.default_rng().normal(size=self.corpus.vectors.shape[1]).astype(np.float32)
        return vector / np.linalg.norm(vector)

    def write_probe(self, index, token: str, vector: np.ndarray) -> None:
        text = f"The {token} release notes: what changed in the {token} module."
        doc = DocumentVersion(collection=self.collection, document_id=f"file:///probe/{token}.md", version="v1",
                              sequence=sequence_key(10_000_000), tenant=SMALL, groups=["eng"])
        chunk = Chunk(number=0, text=text, start=0, end=len(text), tokens=12,
                      content_hash=hashlib.sha256(text.encode()).hexdigest())
        batch = EmbeddedBatch(document=doc, batch=0, batches=1, total_chunks=1, chunks=[chunk], embedder=EMBEDDER,
                              dimensions=len(vector), vectors=[encode_vector(vector)])
        assert index.write_batch(batch) is not None

    def upload(self, folder: Path, endpoint: str, tenants: tuple[str, ...] = (SMALL,)) -> list[str]:
        """These tenants' tables and the ledger, copied into the bucket: a tenant's query reads nothing else (a
        table per tenant), and moto moves a few MB/s, so all 100 tenants' tables would take hours."""
        import boto3

        from ragfn.store.partitions import chunk_table_name, ledger_table_name

        tables = [f"{chunk_table_name(self.collection, t)}.lance" for t in tenants]
        tables.append(f"{ledger_table_name(self.collection)}.lance")
        s3 = boto3.client("s3", endpoint_url=endpoint)
        for path in folder.rglob("*"):
            if path.is_file() and path.relative_to(folder).parts[0] in tables:
                s3.upload_file(str(path), "scale", f"ragfn/{path.relative_to(folder)}")
        return tables


def write_measured(index, layout: Layout, rows: int) -> float:
    """The first `rows` rows through the index stage's write path, one document's batches after another."""
    started, written = time.perf_counter(), 0
    for doc in layout.documents:
        if written >= rows:
            break
        for batch in layout.batches(doc):
            index.write_batch(batch)
        written += doc.rows
    return round(written / (time.perf_counter() - started), 1)


def bulk_load(index, layout: Layout, after_rows: int) -> None:
    """The documents after the first `after_rows` rows straight into the backend's tables (the same rows and
    ledger entries `write_batch` writes, without its per-document checks)."""
    from ragfn.store.base import LedgerEntry

    done, pending, entries = 0, [], []
    flush = _lance_flush if hasattr(index, "chunk_table") else _chroma_flush
    for doc in layout.documents:
        done += doc.rows
        if done <= after_rows:
            continue
        version, chunks, vectors = layout.materialise(doc)
        pending.append((version, chunks, vectors))
        entries.append(LedgerEntry(version.document_id, version.version, version.sequence, "indexed", len(chunks),
                                   version.tenant, version.chunking or ""))
        if sum(len(c) for _, c, _ in pending) >= 20_000:
            flush(index, layout.collection, pending, entries)
            pending, entries = [], []
            log(f"   bulk: {done:,}/{layout.total:,} rows")
    if pending:
        flush(index, layout.collection, pending, entries)


def _by_tenant(pending) -> dict:
    """Each tenant's documents: every tenant has a table of its own (ragfn.store.partitions)."""
    tenants: dict = {}
    for item in pending:
        tenants.setdefault(item[0].tenant, []).append(item)
    return tenants


def _lance_flush(index, collection: str, pending, entries) -> None:
    for tenant, documents in _by_tenant(pending).items():
        _lance_add(index.chunk_table(collection, tenant, embedder=EMBEDDER, dimensions=pending[0][2].shape[1]),
                   documents)
    ledger = index._ledger(collection, create=True)
    ledger.add(pa_rows([{"document_id": e.document_id, "version": e.version, "sequence": e.sequence,
                         "state": e.state, "chunks": e.chunks, "tenant": e.tenant or "", "chunking": e.chunking}
                        for e in entries], ledger.schema))


def pa_rows(rows: list[dict], schema):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=schema)


def _lance_add(table, pending) -> None:
    """Columns built directly (a row-wise Arrow conversion of 1M 384-float vectors takes most of an hour here)."""
    import pyarrow as pa

    from ragfn.store.base import row_id

    dimensions = pending[0][2].shape[1]
    pairs = [(version, chunk) for version, chunks, _ in pending for chunk in chunks]
    flat = np.concatenate([vectors for _, _, vectors in pending]).astype(np.float32).reshape(-1)
    columns = {
        "id": [row_id(v, c) for v, c in pairs], "text": [c.text for _, c in pairs],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(flat), dimensions),
        "document_id": [v.document_id for v, _ in pairs], "version": [v.version for v, _ in pairs],
        "sequence": [v.sequence for v, _ in pairs], "number": [c.number for _, c in pairs],
        "start": [c.start for _, c in pairs], "end": [c.end for _, c in pairs],
        "heading_path": [" > ".join(c.heading_path) for _, c in pairs],
        "content_hash": [c.content_hash for _, c in pairs], "tokens": [c.tokens for _, c in pairs],
        "tenant": [v.tenant or "" for v, _ in pairs], "groups": [list(v.groups) or ["*"] for v, _ in pairs],
        "content_type": [v.content_type or "" for v, _ in pairs]}
    table.add(pa.Table.from_pydict(columns, schema=table.schema))


def _chroma_flush(index, collection: str, pending, entries) -> None:
    from ragfn.store.base import row_id
    from ragfn.store.chroma_tables import chunk_metadata

    for tenant, documents in _by_tenant(pending).items():
        table = index.chunks(collection, tenant, embedder=EMBEDDER, dimensions=pending[0][2].shape[1])
        rows = [(row_id(version, chunk), chunk.text, chunk_metadata(version, chunk), vector)
                for version, chunks, vectors in documents for chunk, vector in zip(chunks, vectors, strict=True)]
        for k in range(0, len(rows), 5000):
            part = rows[k:k + 5000]
            table.add(ids=[r[0] for r in part], documents=[r[1] for r in part],
                      metadatas=[r[2] for r in part], embeddings=np.stack([r[3] for r in part]))
    for entry in entries:
        index._record(collection, entry)
    index._bump(collection)


def moto_bucket(bucket: str) -> tuple[subprocess.Popen, str]:
    """moto's S3 server in its own process, with the bucket made and AWS variables that reach only it."""
    import boto3
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            httpx.get(f"{endpoint}/moto-api/")
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1",
                      AWS_DEFAULT_REGION="us-east-1")
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return server, endpoint
