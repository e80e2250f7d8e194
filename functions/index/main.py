"""index: embedded batches and tombstones in; document.indexed / document.removed out."""

from ragfn.eventing import events
from ragfn.eventing.events import DocumentTombstoned, EmbeddedBatch
from ragfn.eventing.publish import StageResult
from ragfn.ingest.pipeline import index_batch, remove_document
from ragfn.serve.handler import InboundEvent, cloud_function
from ragfn.serve.runtime import Runtime


@cloud_function("index", accepts={events.EMBEDDED: EmbeddedBatch, events.DOCUMENT_TOMBSTONED: DocumentTombstoned},
                uses_index=True)
def handle(event: InboundEvent, runtime: Runtime) -> StageResult:
    if event.type == events.DOCUMENT_TOMBSTONED:
        return remove_document(event.data, runtime)
    return index_batch(event.data, runtime)
