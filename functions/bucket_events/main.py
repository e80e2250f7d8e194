"""bucket-events: GCS Pub/Sub pushes and MinIO webhook posts in, storage CloudEvents out to the broker (K_SINK)."""

# 2xx once published; 400 for junk (with why); 401 without a sender's credentials and 403 for an object outside its
# prefixes when RAGFN_SENDER_KEYS_FILE is set (ragfn.ingest.senders); 503 while the broker is unreachable, so Pub/Sub
# and MinIO send it again.

import flask

from ragfn.eventing.publish import StageResult
from ragfn.ingest.bucket_adapter import translate
from ragfn.ingest.senders import SenderFile
from ragfn.ingest.storage_events import parse_storage_event
from ragfn.serve.handler import InboundEvent, cloud_function
from ragfn.serve.runtime import Runtime

_senders: list[SenderFile] = []  # the one sender file of this process, made on the first request


def senders(runtime: Runtime) -> SenderFile | None:
    settings = runtime.settings
    if settings.sender_keys_file is None:
        return None
    if not _senders:
        _senders.append(SenderFile(settings.sender_keys_file, pubsub_audience=settings.pubsub_audience,
                                   jwks_url=settings.pubsub_jwks_url))
    return _senders[0]


@cloud_function("bucket-events", accepts={}, reply_with_event=False, allow_plain_json=True)
def handle(event: InboundEvent, runtime: Runtime) -> StageResult:
    known = senders(runtime)
    sender = known.current().authenticate(flask.request.headers, flask.request.args) if known else None
    translation = translate(event.data)
    if sender is not None:  # every object announced must be under one of the sender's prefixes
        for out in translation.events:
            for change in parse_storage_event(out.type, out.data.root):
                sender.check(change.uri)
    runtime.publisher.publish(translation.events)
    published = [{"type": out.type, "id": out.to_cloudevent()["id"], "subject": out.subject}
                 for out in translation.events]
    return StageResult([], {"published": published, "ignored": translation.ignored})
