"""GCS Pub/Sub pushes and MinIO webhook posts in; the storage CloudEvents the chunk function takes, out."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cloudevents.http import CloudEvent
from pydantic import RootModel

from ragfn.core.errors import BadEvent
from ragfn.eventing import events
from ragfn.eventing.publish import OutboundEvent
from ragfn.ingest.storage_events import is_eventbridge, parse_storage_event

# GCS notification event types (cloud.google.com/storage/docs/pubsub-notifications) -> the Eventarc CloudEvent type.
# An archive is the live version becoming noncurrent in a versioned bucket: gone, as far as answers go.
GCS_TYPES = {"OBJECT_FINALIZE": events.GCS_FINALIZED, "OBJECT_DELETE": events.GCS_DELETED,
             "OBJECT_ARCHIVE": events.GCS_DELETED}
_MAX_DATA = 1024 * 1024  # a GCS object resource is a few KB; Pub/Sub caps messages at 10 MB


class Payload(RootModel[dict[str, Any]]):
    """Event data passed through as it came: the notification's own JSON, not a ragfn model."""


@dataclass(frozen=True)
class Forwarded(OutboundEvent):
    """A storage event re-published under its origin's source and time, with an id stable across redeliveries."""

    source: str = events.SOURCE
    time: str | None = None

    def to_cloudevent(self) -> CloudEvent:
        event = super().to_cloudevent()
        event["source"] = self.source
        if self.time:
            event["time"] = self.time
        return event


@dataclass(frozen=True)
class Translation:
    events: list[Forwarded]
    ignored: str | None = None  # why nothing is published (a metadata update, a test event), for the reply


def translate(body: object) -> Translation:
    """The CloudEvents one POST stands for; BadEvent (400) when it is neither a Pub/Sub push nor a notification.

        Pub/Sub push: {"message": {"data": base64(object JSON), "attributes": {"eventType": "OBJECT_FINALIZE",
                       "bucketId", "objectId", "objectGeneration", ...}, "messageId", "publishTime"}, "subscription"}
            -> google.cloud.storage.object.v1.finalized | .deleted, data = the object resource (as Eventarc sends it)
        MinIO webhook: {"EventName": "s3:ObjectCreated:Put", "Key": "bucket/key", "Records": [S3-style record]}
            -> io.min.s3.notification (com.amazonaws.s3.notification for records from AWS), data = the body as sent
        EventBridge API destination: {"detail-type": "Object Created", "source": "aws.s3", "detail": {...}}
            -> com.amazon.events.event, data = the EventBridge event as sent

    Both are checked with ragfn.ingest.storage_events before anything is published, so junk is a 400 here, to the
    sender, rather than a dead letter later; the Broker then gives the deliveries its retries and dead letters.
    """
    if not isinstance(body, dict):
        raise BadEvent(f"the request body must be a JSON object, got {type(body).__name__}",
                       hint="point a GCS Pub/Sub push subscription or a MinIO webhook here")
    if "message" in body:
        return _pubsub(body)
    if is_eventbridge(body):  # first, as the parser does: an EventBridge event is one whatever else it carries
        return _eventbridge(body)
    if "Records" in body or "EventName" in body or body.get("Event") == "s3:TestEvent":
        return _notification(body)
    raise BadEvent("neither a Pub/Sub push envelope ('message'), an S3/MinIO notification ('Records') nor an "
                   "EventBridge event ('detail-type')", hint="send GCS notifications through a Pub/Sub push "
                   "subscription, MinIO's through notify_webhook, S3's EventBridge events through an API destination")


def _pubsub(envelope: dict[str, Any]) -> Translation:
    message = envelope.get("message")
    if not isinstance(message, dict):
        raise BadEvent("message must be an object")
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(isinstance(v, str) for v in attributes.values()):
        raise BadEvent("message.attributes must map names to strings")
    kind = attributes.get("eventType")
    if not kind:
        raise BadEvent("message.attributes.eventType is missing: not a Cloud Storage notification",
                       hint="create the topic's notifications with `gsutil notification create -f json`")
    if kind not in GCS_TYPES:
        return Translation([], f"{kind} changes no document")  # OBJECT_METADATA_UPDATE, and any type added later
    if attributes.get("overwrittenByGeneration"):
        # the end of a generation that a newer one replaced: the newer one's OBJECT_FINALIZE re-indexes the document
        return Translation([], f"{kind} of a generation replaced by {attributes['overwrittenByGeneration']}")
    data = _object_resource(message, attributes)
    event_type = GCS_TYPES[kind]
    parse_storage_event(event_type, data)  # the chunk function's checks (unsafe names, bad fields), here and now
    message_id = message.get("messageId") or message.get("message_id")
    if not isinstance(message_id, str) or not message_id:
        raise BadEvent("message.messageId is missing")
    published = attributes.get("eventTime") or message.get("publishTime") or message.get("publish_time")
    # Pub/Sub redelivers with the same messageId, so a retried push republishes the same event id
    return Translation([Forwarded(event_type, Payload(data), key=f"pubsub:{message_id}", subject=f"objects/{data['name']}",
                                  source=f"//storage.googleapis.com/projects/_/buckets/{data['bucket']}",
                                  time=published if isinstance(published, str) else None)])


def _object_resource(message: dict[str, Any], attributes: dict[str, str]) -> dict[str, Any]:
    """The object resource: the message data (payload format JSON_API_V1), or what the attributes say (NONE)."""
    raw = message.get("data")
    if raw in (None, ""):
        data: dict[str, Any] = {"bucket": attributes.get("bucketId"), "name": attributes.get("objectId")}
        if attributes.get("objectGeneration"):
            data["generation"] = attributes["objectGeneration"]
        return data
    if not isinstance(raw, str) or len(raw) > _MAX_DATA:
        raise BadEvent("message.data must be base64 text of at most 1 MiB")
    try:
        data = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise BadEvent(f"message.data is not base64 of a JSON object: {exc}",
                       hint="create the notifications with `-f json` (payload format JSON_API_V1)") from exc
    if not isinstance(data, dict):
        raise BadEvent(f"message.data must decode to a JSON object, got {type(data).__name__}")
    return data


def _notification(payload: dict[str, Any]) -> Translation:
    if not parse_storage_event(None, payload):
        return Translation([], "the notification changes no document (a test event, a read, tagging)")
    records = payload.get("Records") if isinstance(payload.get("Records"), list) else []
    first = records[0] if records and isinstance(records[0], dict) else {}
    origin = str(first.get("eventSource") or "minio:s3")
    event_type = events.S3_NOTIFICATION if origin.startswith("aws:") else events.MINIO_NOTIFICATION
    bucket = ((first.get("s3") or {}).get("bucket") or {}).get("name", "")
    identity = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()  # a resent POST, the same id
    return Translation([Forwarded(event_type, Payload(payload), key=f"notification:{identity}",
                                  subject=payload.get("Key") if isinstance(payload.get("Key"), str) else None,
                                  source=f"{origin}/{bucket}" if bucket else origin,
                                  time=first.get("eventTime") if isinstance(first.get("eventTime"), str) else None)])


def _eventbridge(body: dict[str, Any]) -> Translation:
    changes = parse_storage_event(events.EVENTBRIDGE_EVENT, body)
    if not changes:
        return Translation([], f"{body.get('detail-type')} changes no document")
    event_id, bucket = body.get("id"), body["detail"]["bucket"]["name"]
    if not isinstance(event_id, str) or not event_id:
        raise BadEvent("the EventBridge event has no id")
    # EventBridge retries a target with the same event id, so a retried post republishes the same event id
    return Translation([Forwarded(events.EVENTBRIDGE_EVENT, Payload(body), key=f"eventbridge:{event_id}",
                                  subject=body["detail"]["object"]["key"], source=f"aws.s3/{bucket}",
                                  time=body.get("time") if isinstance(body.get("time"), str) else None)])
