"""bucket-events: GCS Pub/Sub pushes and MinIO webhook posts in, storage CloudEvents out to the broker (K_SINK)."""

# 2xx once published; 400 for junk (with why); 401 without a sender's credentials and 403 for an object outside its
# prefixes when RAGFN_SENDER_KEYS_FILE is set (ragfn.ingest.senders); 503 while the broker is unreachable, so Pub/Sub
# and MinIO send it again. The sender is checked from the headers before the body is read.

import flask

from ragfn.eventing.publish import StageResult
from ragfn.ingest.bucket_adapter import translate
from ragfn.ingest.senders import SenderFile
from ragfn.ingest.storage_events import parse_storage_event
from ragfn.serve.handler import InboundEvent, cloud_function
from ragfn.serve.runtime import Runtime

MAX_NOTIFICATION_BYTES = 2 * 1024 * 1024  # a Pub/Sub message's data is at most 1 MiB (as base64), a webhook less
_senders: list[SenderFile] = []  # the one sender file of this process, made on the first request


def senders(runtime: Runtime) -> SenderFile | None:
    settings = runtime.settings
    if settings.sender_keys_file is None:
        return None
    if not _senders:
        _senders.append(SenderFile(settings.sender_keys_file, pubsub_audience=settings.pubsub_audience,
                                   jwks_url=settings.pubsub_jwks_url))
    return _senders[0]


def admit(request: flask.Request, runtime: Runtime) -> None:
    known = senders(runtime)
    flask.g.sender = known.current().authenticate(request.headers, request.args) if known else None


@cloud_function("bucket-events", accepts={}, reply_with_event=False, allow_plain_json=True, admit=admit,
                max_body_bytes=MAX_NOTIFICATION_BYTES)
def handle(event: InboundEvent, runtime: Runtime) -> StageResult:
    translation = translate(event.data)
    if flask.g.sender is not None:  # every object announced must be under one of the sender's prefixes
        for out in translation.events:
            for change in parse_storage_event(out.type, out.data.root):
                flask.g.sender.check(change.uri)
    runtime.publisher.publish(translation.events)
    published = [{"type": out.type, "id": out.to_cloudevent()["id"], "subject": out.subject}
                 for out in translation.events]
    return StageResult([], {"published": published, "ignored": translation.ignored})
