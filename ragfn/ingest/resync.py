"""Re-sync a folder or bucket prefix with the index: announce every object, and delete what is gone."""

# Bucket notifications can be lost (a notification misconfigured for a while, a queue that expired messages, an
# outage). A nightly resync repairs the index: document.upserted for every object it lists (chunk skips unchanged
# ones by the index ledger) and, with `prune`, document.deleted for indexed documents that are no longer there.
# Work is bounded per invocation: the objects and the deletions, in URI order, are taken `page_size` at a time, and a
# page that leaves some over ends by publishing the request for the next page (`start_after`), so a prefix of any
# size is covered in invocations that each fit a request timeout, each with the broker's retries.

from __future__ import annotations

import time
from typing import Literal

from pydantic import ValidationError

from ragfn.core.errors import BadEvent, problems
from ragfn.eventing import events
from ragfn.eventing.events import DocumentDeleted, DocumentUpserted, ResyncRequested
from ragfn.eventing.publish import OutboundEvent, Publisher
from ragfn.ingest.pipeline import IngestServices
from ragfn.ingest.walk import expand, missing_documents

PUBLISH_BATCH = 50  # events handed to the publisher at once: memory stays flat however large the page


def resync_request(event_type: str | None, data: object) -> ResyncRequested:
    """The request an event carries: a resync.requested's data, or a PingSource's (which cannot set the type)."""
    if isinstance(data, ResyncRequested):
        return data
    try:
        return ResyncRequested.model_validate(data)
    except ValidationError as exc:
        what = "the PingSource's data" if event_type == events.PING else f"{event_type} data"
        raise BadEvent(f"{what} is not a resync request: {problems(exc)}",
                       hint='send {"uri": "s3://bucket/prefix/", "collection": "default", "prune": true}') from exc


def resync(request: ResyncRequested, runtime: IngestServices, publisher: Publisher, *, run: str) -> dict:
    """Publish one page of the resync of `request.uri`; `run` (the request's event id) keys the events, so a
    redelivered request republishes the same event ids. Returns counts for the reply."""
    uris, roots = expand([request.uri], runtime)
    if not roots:
        raise BadEvent(f"resync needs a folder or a bucket prefix, not the object {request.uri}",
                       hint="name a folder (file:///srv/docs/) or a prefix ending in '/' (s3://bucket/docs/)")
    gone = missing_documents(roots, set(uris), runtime, request.collection) if request.prune else []
    work: list[tuple[str, Literal["upsert", "delete"]]] = sorted(
        [(uri, "upsert") for uri in uris] + [(uri, "delete") for uri in gone])
    if request.start_after is not None:
        work = [item for item in work if item[0] > request.start_after]
    page, rest = work[:request.page_size], work[request.page_size:]
    now = time.time_ns() // 1000
    outgoing = [_event(uri, action, request, runtime, run, now) for uri, action in page]
    if rest:  # the next page goes last: if publishing this page fails, the retry redoes it, and nothing runs ahead
        outgoing.append(OutboundEvent(events.RESYNC_REQUESTED, request.model_copy(update={"start_after": page[-1][0]}),
                                      key=f"{run}#after#{page[-1][0]}", subject=request.uri))
    for start in range(0, len(outgoing), PUBLISH_BATCH):
        publisher.publish(outgoing[start:start + PUBLISH_BATCH])
    upserted = sum(1 for _, action in page if action == "upsert")
    return {"uri": request.uri, "collection": request.collection, "listed": len(uris), "upserted": upserted,
            "deleted": len(page) - upserted, "remaining": len(rest),
            "next_start_after": page[-1][0] if rest else None}


def _event(uri: str, action: str, request: ResyncRequested, runtime: IngestServices, run: str,
           now: int) -> OutboundEvent:
    if action == "upsert":
        return OutboundEvent(events.DOCUMENT_UPSERTED, DocumentUpserted(
            uri=uri, collection=request.collection, tenant=request.tenant, groups=request.groups),
            key=f"{run}#{uri}", subject=uri)
    # The listing saw the object gone after the indexed version was written, so the delete orders after that version
    # even when its sequence came from another clock (an S3 sequencer) than this replica's.
    entry = runtime.index.ledger_entry(request.collection, uri)
    sequence = max(now, int(entry.sequence, 16) + 1) if entry is not None else now
    return OutboundEvent(events.DOCUMENT_DELETED, DocumentDeleted(uri=uri, collection=request.collection,
                                                                  sequence=sequence), key=f"{run}#{uri}", subject=uri)
