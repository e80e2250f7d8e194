"""chunk: a storage notification in, chunk batches out to K_SINK (one object may make many events)."""

from dataclasses import replace

from ragfn.eventing import events
from ragfn.eventing.publish import StageResult
from ragfn.ingest.pipeline import chunk_change
from ragfn.ingest.storage_events import parse_storage_event
from ragfn.serve.handler import InboundEvent, cloud_function
from ragfn.serve.runtime import Runtime
from ragfn.store.base import check_collection_name

COLLECTION_EXTENSION = "ragfncollection"
ACCEPTS = {t: None for t in (*events.STORAGE_TYPES, events.DOCUMENT_UPSERTED, events.DOCUMENT_DELETED)}


@cloud_function("chunk", accepts=ACCEPTS, reply_with_event=False, allow_plain_json=True,
                uses_index=True)
def handle(event: InboundEvent, runtime: Runtime) -> StageResult:
    changes = parse_storage_event(event.type, event.data, event_time=event.time)
    if collection := event.attributes.get(COLLECTION_EXTENSION):
        # A bucket's source can route it to a collection (Knative ceOverrides); S3 notifications carry no metadata.
        changes = [replace(change, collection=check_collection_name(str(collection))) for change in changes]
    results = [chunk_change(change, runtime, event_time=event.time) for change in changes]
    # Publish everything only after every object was read and chunked: a failure above publishes nothing.
    runtime.publisher.publish([out for result in results for out in result.events])
    return StageResult([], {"documents": [result.summary for result in results]})
