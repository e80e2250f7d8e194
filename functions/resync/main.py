"""resync: a resync request (or the nightly ping) in; one page of document events (and the next page's request) out."""

from ragfn.eventing import events
from ragfn.eventing.events import ResyncRequested
from ragfn.eventing.publish import StageResult
from ragfn.ingest.resync import resync, resync_request
from ragfn.serve.handler import InboundEvent, cloud_function
from ragfn.serve.runtime import Runtime


@cloud_function("resync", accepts={events.RESYNC_REQUESTED: ResyncRequested, events.PING: None},
                reply_with_event=False, uses_index=True)
def handle(event: InboundEvent, runtime: Runtime) -> StageResult:
    request = resync_request(event.type, event.data)
    return StageResult([], resync(request, runtime, runtime.publisher, run=event.id or ""))
