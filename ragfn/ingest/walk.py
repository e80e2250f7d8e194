"""`ragfn ingest`: walk paths and URIs, run chunk -> embed -> index in-process, and prune what is gone."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from opentelemetry.trace import SpanKind

from ragfn.core.errors import RagfnError, Unavailable
from ragfn.core.telemetry import tracer
from ragfn.core.uris import parse_uri, to_uri
from ragfn.eventing import events
from ragfn.eventing.events import ChunkBatch, DocumentTombstoned, EmbeddedBatch
from ragfn.ingest.pipeline import IngestServices, chunk_change, embed_batch, index_batch
from ragfn.ingest.storage_events import ObjectChange

# When walking a folder or prefix, only these are picked up; a file named explicitly is always tried.
INGESTIBLE_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst", ".html", ".htm", ".pdf"}


@dataclass
class IngestReport:
    outcomes: dict[str, str] = field(default_factory=dict)  # uri -> indexed | unchanged | stale | gone | ...
    errors: dict[str, str] = field(default_factory=dict)  # uri -> why it was rejected
    chunks_embedded: int = 0
    chunks_reused: int = 0
    removed: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(Counter(self.outcomes.values())) | ({"rejected": len(self.errors)} if self.errors else {})


def expand(targets: Iterable[str], runtime: IngestServices) -> tuple[list[str], list[str]]:
    """(object URIs to ingest, root URIs they were found under) for files, folders and bucket prefixes."""
    uris, roots = [], []
    for target in targets:
        uri = to_uri(target)
        scheme, _, key = parse_uri(uri, root=True)
        is_folder = (scheme == "file" and _is_dir(key)) or (scheme != "file" and (not key or key.endswith("/")))
        if not is_folder:
            uris.append(uri)
            continue
        roots.append(uri.rstrip("/") + "/")
        uris.extend(u for u in runtime.reader.list(uri) if PurePosixPath(u).suffix.lower() in INGESTIBLE_SUFFIXES)
    return sorted(dict.fromkeys(uris)), roots


def _is_dir(path: str) -> bool:
    return Path(path).is_dir()


IN_PROCESS_BATCH = 1024  # chunks per embed/index call in-process; Chroma charges a fixed cost per write call


def merge_batches(batches: list[ChunkBatch]) -> list[ChunkBatch]:
    """In-process there is no event size limit: fewer, larger batches sort better and cost fewer index calls."""
    chunks = [chunk for batch in batches for chunk in batch.chunks]
    groups = [chunks[i:i + IN_PROCESS_BATCH] for i in range(0, len(chunks), IN_PROCESS_BATCH)]
    return [batches[0].model_copy(update={"batch": n, "batches": len(groups), "chunks": group})
            for n, group in enumerate(groups)]


def ingest_uri(change: ObjectChange, runtime: IngestServices, report: IngestReport) -> None:
    """chunk -> embed -> index for one object, each stage in its own span, as the functions would trace it."""
    with tracer().start_as_current_span("ragfn.chunk", attributes={"ragfn.uri": change.uri}):
        chunked = chunk_change(change, runtime)
    status = chunked.summary.get("status", "chunked")
    committed = False
    for whole in merge_batches([out.data for out in chunked.events]):
        with tracer().start_as_current_span("ragfn.embed"):
            batch = embed_batch(whole, runtime).events[0].data
        assert isinstance(batch, EmbeddedBatch)
        report.chunks_reused += batch.reused
        report.chunks_embedded += len(batch.chunks) - batch.reused
        with tracer().start_as_current_span("ragfn.index"):
            committed = bool(index_batch(batch, runtime).events) or committed
    report.outcomes[change.uri] = "indexed" if committed else status


def ingest(targets: list[str], runtime: IngestServices, *, collection: str = "default", tenant: str | None = None,
           groups: tuple[str, ...] = (), prune: bool = False,
           on_progress: Callable[[str, int, int], None] | None = None) -> IngestReport:
    report = IngestReport()
    uris, roots = expand(targets, runtime)
    for done, uri in enumerate(uris):
        with tracer().start_as_current_span("ragfn.ingest", attributes={"ragfn.uri": uri}):
            if on_progress:
                on_progress(uri, done, len(uris))
            change = ObjectChange(action="upsert", uri=uri, collection=collection, version=None, sequence=None,
                                  tenant=tenant, groups=tuple(groups), size=None, content_type=None,
                                  event_labels=True)  # the operator labels what `ragfn ingest` reads
            try:
                ingest_uri(change, runtime, report)
            except RagfnError as exc:
                if exc.retryable:  # the model, the store or the bucket is unusable: every file would fail alike
                    raise
                report.errors[uri] = str(exc)  # one bad file never stops the rest; the report names it
            if report.outcomes.get(uri) == "gone":  # named on the command line, so a typo, not a race
                del report.outcomes[uri]
                report.errors[uri] = "no such file or object"
    if on_progress:
        on_progress("", len(uris), len(uris))
    if prune:
        report.removed = prune_missing(roots, set(uris), runtime, collection)
    return report


def missing_documents(roots: list[str], present: set[str], runtime: IngestServices, collection: str) -> list[str]:
    """Indexed documents under `roots` that were not found this time."""
    if not roots or not runtime.index.exists(collection):
        return []
    return [entry.document_id for entry in runtime.index.ledger(collection) if entry.state == "indexed"
            and any(entry.document_id.startswith(root) for root in roots) and entry.document_id not in present]


def prune_missing(roots: list[str], present: set[str], runtime: IngestServices, collection: str) -> list[str]:
    """Tombstone indexed documents under `roots` that were not found this time."""
    sequence = events.sequence_key(time.time_ns() // 1000)
    removed = missing_documents(roots, present, runtime, collection)
    for document_id in removed:
        runtime.index.tombstone(DocumentTombstoned(collection=collection, document_id=document_id,
                                                   sequence=sequence), reason="pruned")
    return removed


def ingest_via_broker(targets: list[str], runtime: IngestServices, broker_url: str, *, collection: str = "default",
                      tenant: str | None = None, groups: tuple[str, ...] = (), prune: bool = False,
                      timeout: float = 600.0, on_progress: Callable[[str, int, int], None] | None = None,
                      token_file: Path | None = None) -> dict:
    """Send document.upserted (and, with prune, document.deleted) events to a running `ragfn dev` and wait; with
    the token in `token_file` (the dev broker's, as a SinkBinding's)."""
    import httpx

    from ragfn.eventing.publish import HttpPublisher, OutboundEvent

    uris, roots = expand(targets, runtime)
    publisher = HttpPublisher(broker_url, token_file=token_file)
    for uri in uris:  # one trace per document, from this command through chunk, embed and index
        with tracer().start_as_current_span("ragfn.ingest", kind=SpanKind.PRODUCER, attributes={"ragfn.uri": uri}):
            publisher.publish([OutboundEvent(events.DOCUMENT_UPSERTED, events.DocumentUpserted(
                uri=uri, collection=collection, tenant=tenant, groups=list(groups)), key=f"{uri}@{time.time_ns()}")])
    deleted = missing_documents(roots, set(uris), runtime, collection) if prune else []
    now = time.time_ns() // 1000
    publisher.publish([OutboundEvent(events.DOCUMENT_DELETED, events.DocumentDeleted(
        uri=uri, collection=collection, sequence=now), key=f"{uri}@{now}") for uri in deleted])
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = httpx.get(f"{broker_url}/status", timeout=5).json()
        except httpx.HTTPError as exc:
            raise Unavailable(f"lost the dev broker at {broker_url}: {exc}", hint="is `ragfn dev` still running?") from exc
        if on_progress:
            on_progress(f"{status['in_flight']} deliveries in flight", status["delivered"], 0)
        if status["in_flight"] == 0:
            return {"sent": len(uris), "deleted": deleted, "broker": status}
        if time.monotonic() > deadline:
            raise TimeoutError(f"the broker still had {status['in_flight']} deliveries after {timeout:.0f}s")
        time.sleep(0.2)
