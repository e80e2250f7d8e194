"""Normalise GCS, S3 (its notifications or its EventBridge events, direct or through SQS), MinIO and ragfn's own
storage notifications into ObjectChanges."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import unquote_plus

from pydantic import BaseModel, ValidationError

from ragfn.core.errors import BadEvent
from ragfn.core.uris import canonical_uri, make_uri
from ragfn.eventing import events
from ragfn.ingest.objects import metadata_labels, user_metadata

ACCEPTED_TYPES = (*events.STORAGE_TYPES, events.DOCUMENT_UPSERTED, events.DOCUMENT_DELETED)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_NESTING = 4  # SNS inside SQS inside a Knative envelope is 3; more is a loop or an attack


@dataclass(frozen=True)
class ObjectChange:
    action: Literal["upsert", "delete"]
    uri: str  # canonical: "gs://bucket/key", "s3://bucket/key", "file:///abs/path"
    collection: str = "default"
    version: str | None = None  # etag / generation / versionId; None -> the caller hashes the content
    sequence: int | None = None  # orders versions of the same object; None -> the caller fills it
    tenant: str | None = None
    groups: tuple[str, ...] = ()
    size: int | None = None
    content_type: str | None = None
    # whether tenant and groups come from ragfn's own event (a gateway upload, `ragfn ingest`, a re-sync), which the
    # chunk stage may use for an object without labels; a bucket notification's are the sender's claim and are not
    event_labels: bool = False


def parse_storage_event(event_type: str | None, data: object, *,
                        event_time: datetime | None = None) -> list[ObjectChange]:
    """The object changes an event announces; [] for events that change nothing (S3 test events, reads).

    `event_type` None means a plain JSON POST with no CloudEvent envelope, as MinIO's webhook sends. The
    IntegrationSource's SQS messages (events.AWS_SQS_MESSAGE) carry the queue message's body: an S3 notification,
    maybe inside an SNS envelope, parsed like the S3 type.
    Raises BadEvent (400, not retried) for anything malformed or unsafe.
    """
    if event_type is not None and event_type not in ACCEPTED_TYPES:
        raise BadEvent(f"unsupported event type {event_type!r}; accepted: {', '.join(ACCEPTED_TYPES)}")
    payload = _decode(data, "event data")
    if event_type in (events.GCS_FINALIZED, events.GCS_DELETED):
        return [_gcs(payload, "upsert" if event_type == events.GCS_FINALIZED else "delete")]
    if event_type in (events.DOCUMENT_UPSERTED, events.DOCUMENT_DELETED):
        return [_ragfn(event_type, payload, event_time)]
    if event_type == events.EVENTBRIDGE_EVENT:
        return _eventbridge(payload)
    if event_type is None and not _is_notification(payload):
        raise BadEvent("a request without CloudEvent attributes must be an S3 or MinIO notification "
                       "(a 'Records' list) or an S3 EventBridge event ('detail-type', 'detail'); "
                       f"send other events as CloudEvents with one of: {', '.join(ACCEPTED_TYPES)}")
    return _notification(payload, 0)


def _decode(data: object, what: str) -> dict[str, Any]:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadEvent(f"{what} is not UTF-8: {exc}") from exc
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise BadEvent(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadEvent(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def _get(obj: dict[str, Any], key: str, kind: type, where: str, *, required: bool = True) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise BadEvent(f"{where}.{key} is missing")
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadEvent(f"{where}.{key} must be a {kind.__name__}, got {type(value).__name__}")
    if kind is str and required and not value:
        raise BadEvent(f"{where}.{key} is empty")
    return value


def _int(obj: dict[str, Any], key: str, where: str) -> int | None:
    """GCS sends int64 fields as decimal strings; accept those, or a JSON number."""
    value = obj.get(key)
    if value is None:
        return None
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str):
        try:
            number = int(value)
        except ValueError:
            pass
    if number is None or number < 0:
        raise BadEvent(f"{where}.{key} must be a non-negative integer, got {value!r}")
    return number


def _sequencer(obj: dict[str, Any], where: str) -> int | None:
    """S3's sequencer as a number in ragfn's order. Sequencers may differ in length, and AWS orders them by
    right-padding the shorter with zeros, then comparing the text: so "FF" came after "100". Padding every one to
    the sequence key's width (32 hex digits) gives the same order as numbers. At most 24 digits (AWS sends about
    18), so the ledger's "one more than the last" always fits the key's width."""
    value = obj.get("sequencer")
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 24 or not all(c in string.hexdigits for c in value):
        raise BadEvent(f"{where}.sequencer must be a hex string of 1 to 24 digits, got {str(value)[:40]!r}")
    return int(value.ljust(events.SEQUENCE_DIGITS, "0"), 16)


def _labels(obj: dict[str, Any], key: str, where: str) -> tuple[str | None, tuple[str, ...], str]:
    meta = user_metadata(_get(obj, key, dict, where, required=False) or {})
    tenant, groups, collection = metadata_labels(meta)
    return tenant, groups, collection or "default"


def _gcs(data: dict[str, Any], action: Literal["upsert", "delete"]) -> ObjectChange:
    # A non-versioned bucket also sends `deleted` for the generation an overwrite replaced; its generation is lower
    # than the new one, so the tombstone it becomes cannot remove the new version.
    bucket, name = _get(data, "bucket", str, "data"), _get(data, "name", str, "data")
    generation = _int(data, "generation", "data")
    tenant, groups, collection = _labels(data, "metadata", "data")
    return ObjectChange(action, make_uri("gs", bucket, name), collection,
                        None if generation is None else str(generation), generation, tenant, groups,
                        _int(data, "size", "data"), _get(data, "contentType", str, "data", required=False))


def _is_notification(payload: dict[str, Any]) -> bool:
    return (isinstance(payload.get("Records"), list) or payload.get("Event") == "s3:TestEvent"
            or ("s3" in payload and "eventName" in payload) or is_eventbridge(payload) or _inner(payload) is not None)


def is_eventbridge(payload: dict[str, Any]) -> bool:
    """An EventBridge event's envelope: https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html"""
    return "detail-type" in payload and "detail" in payload


def _inner(payload: dict[str, Any]) -> object | None:
    """The message inside an SQS (Body / body) or SNS (Message) envelope, or None when this is no envelope."""
    sns = payload.get("Sns")
    candidates = (payload.get("Body"), payload.get("body"),
                  payload.get("Message") if payload.get("Type") == "Notification" else None,
                  sns.get("Message") if isinstance(sns, dict) else None)
    return next((c for c in candidates if c is not None), None)


def _notification(payload: dict[str, Any], depth: int) -> list[ObjectChange]:
    if depth > _MAX_NESTING:
        raise BadEvent("the notification is nested in too many SQS/SNS envelopes")
    if payload.get("Event") == "s3:TestEvent":  # sent once when a bucket's notifications are configured
        return []
    if is_eventbridge(payload):  # an EventBridge rule's target is the queue: the message body is the event
        return _eventbridge(payload)
    inner = _inner(payload)
    if inner is not None:
        return _notification(_decode(inner, "the SQS/SNS message body"), depth + 1)
    records = payload.get("Records")
    if records is None and "s3" in payload and "eventName" in payload:
        records = [payload]  # one bare record, as some bridges send
    if not isinstance(records, list):
        raise BadEvent("the S3/MinIO notification has no 'Records' list")
    changes: list[ObjectChange] = []
    for i, record in enumerate(records):
        where = f"Records[{i}]"
        if not isinstance(record, dict):
            raise BadEvent(f"{where} must be an object, got {type(record).__name__}")
        if _inner(record) is not None:  # an SQS batch delivered to a Lambda-style consumer
            changes += _notification(_decode(_inner(record), f"{where}.body"), depth + 1)
        elif (change := _s3_record(record, where)) is not None:
            changes.append(change)
    return changes


def _s3_record(record: dict[str, Any], where: str) -> ObjectChange | None:
    name = _get(record, "eventName", str, where).removeprefix("s3:")  # MinIO spells it "s3:ObjectCreated:Put"
    if name.startswith("ObjectCreated:"):
        action: Literal["upsert", "delete"] = "upsert"
    elif name.startswith("ObjectRemoved:"):
        action = "delete"
    else:
        return None  # reads, restores, replication, tagging: nothing to (re)index
    s3 = _get(record, "s3", dict, where)
    bucket = _get(_get(s3, "bucket", dict, f"{where}.s3"), "name", str, f"{where}.s3.bucket")
    obj, at = _get(s3, "object", dict, f"{where}.s3"), f"{where}.s3.object"
    key = unquote_plus(_get(obj, "key", str, at))  # keys arrive form-encoded: "my+file%281%29.txt"
    # A bucket with versioning suspended reports the literal versionId "null".
    version_id = _get(obj, "versionId", str, at, required=False)
    etag = _get(obj, "eTag", str, at, required=False)
    version = (version_id if version_id not in (None, "", "null") else None) or (etag.strip('"') if etag else None)
    # AWS S3 carries no user metadata here; MinIO does (userMetadata), and head() fills it in for S3.
    tenant, groups, collection = _labels(obj, "userMetadata", at)
    meta_type = user_metadata(obj.get("userMetadata") or {}).get("content-type")
    return ObjectChange(action, make_uri("s3", bucket, key), collection, version, _sequencer(obj, at),
                        tenant, groups, _int(obj, "size", at),
                        _get(obj, "contentType", str, at, required=False) or meta_type)


# S3's EventBridge detail types that change a document; the others (restores, tags, ACLs, storage classes) do not.
_EVENTBRIDGE_ACTIONS: dict[str, Literal["upsert", "delete"]] = {"Object Created": "upsert",
                                                                 "Object Deleted": "delete"}


def _eventbridge(payload: dict[str, Any]) -> list[ObjectChange]:
    """S3's EventBridge events. Unlike a notification's, the key is not URL-encoded. A delete (a delete marker, or a
    version removed for good) becomes a tombstone only once the object is gone (the chunk stage asks the bucket)."""
    source = _get(payload, "source", str, "event")
    if source != "aws.s3":
        raise BadEvent(f"an EventBridge event from {source!r}: only S3's (source aws.s3) change documents",
                       hint="match `source: [aws.s3]` in the EventBridge rule")
    action = _EVENTBRIDGE_ACTIONS.get(_get(payload, "detail-type", str, "event"))
    if action is None:
        return []
    detail = _get(payload, "detail", dict, "event")
    bucket = _get(_get(detail, "bucket", dict, "detail"), "name", str, "detail.bucket")
    obj = _get(detail, "object", dict, "detail")
    key = _get(obj, "key", str, "detail.object")
    version_id = _get(obj, "version-id", str, "detail.object", required=False)
    etag = _get(obj, "etag", str, "detail.object", required=False)
    version = (version_id if version_id not in (None, "", "null") else None) or (etag.strip('"') if etag else None)
    return [ObjectChange(action, make_uri("s3", bucket, key), "default", version,
                         _sequencer(obj, "detail.object"), size=_int(obj, "size", "detail.object"))]


def _ragfn(event_type: str, payload: dict[str, Any], event_time: datetime | None) -> ObjectChange:
    model = events.DocumentUpserted if event_type == events.DOCUMENT_UPSERTED else events.DocumentDeleted
    try:
        doc = model.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in exc.errors())
        raise BadEvent(f"invalid {event_type} data: {problems}") from None
    uri = canonical_uri(doc.uri)
    sequence = doc.sequence if doc.sequence is not None else _micros(event_time)
    if isinstance(doc, events.DocumentDeleted):
        return ObjectChange("delete", uri, doc.collection, None, sequence)
    return ObjectChange("upsert", uri, doc.collection, doc.version, sequence, doc.tenant, tuple(doc.groups), None,
                        doc.content_type, event_labels=True)


def _micros(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # CloudEvents times are UTC; a naive one came from a careless caller
    return (moment - _EPOCH) // timedelta(microseconds=1)
