"""index: embedded batches and tombstones in; document.indexed / document.removed out."""

from ragfn import events
from ragfn.events import DocumentTombstoned, EmbeddedBatch
from ragfn.handler import InboundEvent, cloud_function
from ragfn.publish import StageResult
from ragfn.pipeline import index_batch, remove_document
from ragfn.runtime import Runtime


@cloud_function("index", accepts={events.EMBEDDED: EmbeddedBatch, events.DOCUMENT_TOMBSTONED: DocumentTombstoned})
def handle(event: InboundEvent, runtime: Runtime) -> StageResult:
    if event.type == events.DOCUMENT_TOMBSTONED:
        return remove_document(event.data, runtime)
    return index_batch(event.data, runtime)
