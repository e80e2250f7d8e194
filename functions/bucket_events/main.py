"""bucket-events: GCS Pub/Sub pushes and MinIO webhook posts in, storage CloudEvents out to the broker (K_SINK)."""

# 2xx once published; 400 for junk (with why); 401 without a service key when RAGFN_API_KEYS_FILE is set; 503 while
# the broker is unreachable, so Pub/Sub and MinIO send it again.

import flask

from ragfn.eventing.publish import StageResult
from ragfn.ingest.bucket_adapter import authorize, sender_keys, translate
from ragfn.serve.handler import InboundEvent, cloud_function
from ragfn.serve.runtime import Runtime


@cloud_function("bucket-events", accepts={}, reply_with_event=False, allow_plain_json=True)
def handle(event: InboundEvent, runtime: Runtime) -> StageResult:
    authorize(sender_keys(runtime.settings), flask.request.headers, flask.request.args.get("token"))
    translation = translate(event.data)
    runtime.publisher.publish(translation.events)
    published = [{"type": out.type, "id": out.to_cloudevent()["id"], "subject": out.subject}
                 for out in translation.events]
    return StageResult([], {"published": published, "ignored": translation.ignored})
