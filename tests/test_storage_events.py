"""Storage notifications from GCS, S3, SQS, MinIO and ragfn itself become ObjectChanges; bad ones become BadEvent."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ragfn.core.errors import BadEvent, UnsafeKey
from ragfn.eventing import events
from ragfn.ingest.storage_events import ACCEPTED_TYPES, ObjectChange, parse_storage_event

pytestmark = pytest.mark.unit

PAYLOADS = Path(__file__).parent / "payloads"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PAYLOADS / name).read_text())
    return data


def one(event_type: str | None, data: object, **kwargs: Any) -> ObjectChange:
    changes = parse_storage_event(event_type, data, **kwargs)
    assert len(changes) == 1, changes
    return changes[0]


# --- GCS ---------------------------------------------------------------------------------------------------------

def test_gcs_finalized() -> None:
    change = one(events.GCS_FINALIZED, load("gcs_finalized.json"))
    assert change == ObjectChange(
        action="upsert", uri="gs://ragfn-docs/handbook/onboarding guide.md", collection="handbook",
        version="1712345678901234", sequence=1712345678901234, tenant="acme", groups=("engineering", "support"),
        size=4154, content_type="text/markdown")


def test_gcs_deleted_without_metadata() -> None:
    change = one(events.GCS_DELETED, load("gcs_deleted.json"))
    assert (change.action, change.uri, change.sequence) == ("delete", "gs://ragfn-docs/handbook/onboarding guide.md",
                                                           1712345678901234)
    assert (change.tenant, change.groups, change.collection) == (None, (), "default")


@pytest.mark.parametrize("encode", [lambda d: json.dumps(d), lambda d: json.dumps(d).encode(), lambda d: d])
def test_gcs_data_as_bytes_str_or_dict(encode: Any) -> None:
    assert one(events.GCS_FINALIZED, encode(load("gcs_finalized.json"))).sequence == 1712345678901234


def test_gcs_metadata_keys_are_case_insensitive() -> None:
    data = load("gcs_finalized.json")
    data["metadata"] = {"Ragfn-Tenant": "globex", "RAGFN-GROUPS": " a ,, b, a "}
    change = one(events.GCS_FINALIZED, data)
    assert (change.tenant, change.groups) == ("globex", ("a", "b"))


# --- AWS S3 ------------------------------------------------------------------------------------------------------

def test_s3_put_decodes_the_key_and_the_hex_sequencer() -> None:
    change = one(events.S3_NOTIFICATION, load("s3_put.json"))
    assert change == ObjectChange(
        action="upsert", uri="s3://amzn-s3-demo-bucket/reports/Quarterly Report (2024).md", collection="default",
        version="d41d8cd98f00b204e9800998ecf8427e", sequence=int("0055AED6DCD90281E5".ljust(32, "0"), 16), tenant=None,
        groups=(), size=1024, content_type=None)


def test_sequencers_of_different_lengths_order_as_aws_says() -> None:
    """AWS: right-pad the shorter sequencer with zeros, then compare the text. As numbers, "100" beat "FF"."""
    def sequence(sequencer: str) -> int:
        body = load("s3_put.json")
        body["Records"][0]["s3"]["object"]["sequencer"] = sequencer
        return one(events.S3_NOTIFICATION, body).sequence

    assert sequence("FF") > sequence("100") > sequence("0FF")
    assert sequence("0055AED6DCD90281E5") < sequence("0055AED6DCD90281E6") < sequence("0055AED6DCD90281E60001")
    with pytest.raises(BadEvent, match="1 to 24 digits"):
        sequence("F" * 25)  # a forged sequencer no later change could outrank


def test_s3_delete_orders_after_the_put() -> None:
    put, delete = one(events.S3_NOTIFICATION, load("s3_put.json")), one(events.S3_NOTIFICATION, load("s3_delete.json"))
    assert (delete.action, delete.uri, delete.version, delete.size) == ("delete", put.uri, None, None)
    assert delete.sequence is not None and put.sequence is not None and delete.sequence > put.sequence


def test_s3_version_id_wins_over_etag_and_literal_null_is_ignored() -> None:
    data = load("s3_put.json")
    obj = data["Records"][0]["s3"]["object"]
    obj["versionId"] = "096fKKXTRTtl3on89fVO.nfljtsv6qko"
    assert one(None, data).version == "096fKKXTRTtl3on89fVO.nfljtsv6qko"
    obj["versionId"], obj["eTag"] = "null", '"abc"'
    assert one(None, data).version == "abc"


def test_s3_test_event_changes_nothing() -> None:
    assert parse_storage_event(events.S3_NOTIFICATION, load("s3_test_event.json")) == []
    assert parse_storage_event(None, json.dumps(load("s3_test_event.json"))) == []


def test_sqs_envelope_is_unwrapped() -> None:
    direct = one(events.S3_NOTIFICATION, load("s3_put.json"))
    assert one(events.S3_NOTIFICATION, load("sqs_wrapped_s3.json")) == direct
    assert one(None, load("sqs_wrapped_s3.json")) == direct
    # The Lambda-style SQS batch: Records of {"eventSource": "aws:sqs", "body": "<S3 notification>"}.
    batch = {"Records": [{"messageId": "m1", "eventSource": "aws:sqs", "body": json.dumps(load("s3_put.json"))},
                         {"messageId": "m2", "eventSource": "aws:sqs", "body": json.dumps(load("s3_delete.json"))}]}
    assert [c.action for c in parse_storage_event(events.S3_NOTIFICATION, batch)] == ["upsert", "delete"]
    # S3 -> SNS -> SQS: the SQS body is an SNS notification whose Message is the S3 notification.
    sns = {"Type": "Notification", "MessageId": "n1", "Message": json.dumps(load("s3_put.json"))}
    assert one(events.S3_NOTIFICATION, {"Body": json.dumps(sns)}) == direct


def test_integrationsource_sqs_messages_are_the_queue_body() -> None:
    """Knative's IntegrationSource (aws.sqs) sends the SQS message body as the data of a
    dev.knative.connector.event.aws-sqs event: the S3 notification, or the SNS envelope around it."""
    direct = one(events.S3_NOTIFICATION, load("s3_put.json"))
    body = load("sqs_wrapped_s3.json")["Body"]
    assert one(events.AWS_SQS_MESSAGE, body.encode()) == direct  # binary mode: the bytes as they left the queue
    assert one(events.AWS_SQS_MESSAGE, json.loads(body)) == direct  # decoded by a JSON content type
    sns = {"Type": "Notification", "MessageId": "n1", "TopicArn": "arn:aws:sns:us-west-2:123456789012:docs",
           "Subject": "Amazon S3 Notification", "Message": body, "Timestamp": "2024-04-05T19:34:39.003Z"}
    assert one(events.AWS_SQS_MESSAGE, json.dumps(sns)) == direct
    assert parse_storage_event(events.AWS_SQS_MESSAGE, json.dumps(load("s3_test_event.json"))) == []
    deleted = parse_storage_event(events.AWS_SQS_MESSAGE, json.dumps(load("s3_delete.json")))
    assert [c.action for c in deleted] == ["delete"]


@pytest.mark.parametrize(("data", "message"), [
    ('{"orderId": 7}', "Records"), ("plain text", "not valid JSON"), ('"a string"', "JSON object")])
def test_sqs_messages_that_are_no_notification_are_bad_events(data: str, message: str) -> None:
    with pytest.raises(BadEvent, match=message):
        parse_storage_event(events.AWS_SQS_MESSAGE, data)


@pytest.mark.parametrize("name", ["ObjectRestore:Post", "s3:ObjectAccessed:Get", "ObjectTagging:Put",
                                  "Replication:OperationFailedReplication", "LifecycleTransition"])
def test_other_event_names_are_ignored(name: str) -> None:
    data = load("s3_put.json")
    data["Records"][0]["eventName"] = name
    assert parse_storage_event(events.S3_NOTIFICATION, data) == []


def test_several_records_keep_their_order() -> None:
    data = load("s3_put.json")
    data["Records"] += load("s3_delete.json")["Records"]
    assert [c.action for c in parse_storage_event(None, data)] == ["upsert", "delete"]


# --- MinIO -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("event_type", [events.MINIO_NOTIFICATION, None])
def test_minio_webhook_put(event_type: str | None) -> None:
    change = one(event_type, json.dumps(load("minio_put.json")).encode())
    assert change == ObjectChange(
        action="upsert", uri="s3://docs/handbook/vacation policy.md", collection="default",
        version="5337769ffa594e742408ad3f30713cd7", sequence=int("17C3A8F3B4E2D6F1".ljust(32, "0"), 16), tenant="acme",
        groups=("hr", "managers"), size=2213, content_type="text/markdown")


def test_minio_user_metadata_any_case() -> None:
    data = load("minio_put.json")
    data["Records"][0]["s3"]["object"]["userMetadata"] = {"x-amz-meta-ragfn-tenant": "initech",
                                                          "X-AMZ-META-RAGFN-COLLECTION": "legal"}
    change = one(events.MINIO_NOTIFICATION, data)
    assert (change.tenant, change.collection, change.groups) == ("initech", "legal", ())


def test_minio_delete() -> None:
    change = one(None, load("minio_delete.json"))
    assert (change.action, change.uri, change.sequence) == ("delete", "s3://docs/handbook/vacation policy.md",
                                                           int("17C3F0A1C7D8E9B2".ljust(32, "0"), 16))


# --- ragfn's own events ------------------------------------------------------------------------------------------

def test_document_upserted_uses_event_time_when_no_sequence() -> None:
    when = datetime(2024, 4, 5, 19, 34, 38, 901234, tzinfo=UTC)
    data = {"uri": "file:///srv/docs/a.md", "tenant": "acme", "groups": ["eng"], "collection": "notes"}
    change = one(events.DOCUMENT_UPSERTED, data, event_time=when)
    assert change == ObjectChange(action="upsert", uri="file:///srv/docs/a.md", collection="notes", version=None,
                                  sequence=1712345678901234, tenant="acme", groups=("eng",), event_labels=True)
    assert one(events.DOCUMENT_UPSERTED, {**data, "sequence": 7}, event_time=when).sequence == 7
    assert one(events.DOCUMENT_UPSERTED, data).sequence is None


def test_document_deleted() -> None:
    change = one(events.DOCUMENT_DELETED, events.DocumentDeleted(uri="s3://b/k.txt", sequence=None),
                 event_time=datetime(1970, 1, 1, 0, 0, 1))
    assert (change.action, change.uri, change.sequence, change.collection) == ("delete", "s3://b/k.txt", 1_000_000,
                                                                                "default")


@pytest.mark.parametrize(("data", "field"), [
    ({}, "uri"),
    ({"uri": "s3://b/k", "groups": "eng"}, "groups"),
    ({"uri": "s3://b/k", "sequence": -1}, "sequence"),
    ({"uri": "s3://b/k", "colour": "red"}, "colour"),
])
def test_document_upserted_validation_names_the_field(data: dict[str, Any], field: str) -> None:
    with pytest.raises(BadEvent, match=field) as info:
        parse_storage_event(events.DOCUMENT_UPSERTED, data)
    assert events.DOCUMENT_UPSERTED in info.value.message


@pytest.mark.parametrize("uri", ["docs/a.md", "ftp://host/a", "file://relative/a.md", "s3://bucket", "s3:///key"])
def test_document_upserted_rejects_bad_uris(uri: str) -> None:
    with pytest.raises(BadEvent):
        parse_storage_event(events.DOCUMENT_UPSERTED, {"uri": uri})


# --- bad input ---------------------------------------------------------------------------------------------------

# --- S3 through EventBridge (payloads: the examples of AWS's "EventBridge event message structure") ---------------

@pytest.mark.parametrize("event_type", [events.EVENTBRIDGE_EVENT, events.AWS_SQS_MESSAGE, None])
def test_eventbridge_object_created_as_a_cloudevent_an_sqs_body_or_a_plain_post(event_type: str | None) -> None:
    data = load("eventbridge_object_created.json")
    change = one(event_type, json.dumps(data) if event_type == events.AWS_SQS_MESSAGE else data)
    # the key is taken as it is: EventBridge does not URL-encode it as S3's notifications do ("+" stays "+")
    assert change == ObjectChange("upsert", "s3://amzn-s3-demo-bucket1/reports/Quarterly Report+Q3 (2021).md",
                                  version="IYV3p45BT0ac8hjHg1houSdS1a.Mc8cs",
                                  sequence=int("00617F08299329D189".ljust(32, "0"), 16), size=5)


def test_eventbridge_object_deleted_orders_after_the_create() -> None:
    created = one(events.EVENTBRIDGE_EVENT, load("eventbridge_object_created.json"))
    deleted = one(events.EVENTBRIDGE_EVENT, load("eventbridge_object_deleted.json"))
    assert deleted.action == "delete" and deleted.uri == created.uri and deleted.sequence > created.sequence


def test_eventbridge_events_that_change_no_document_are_ignored() -> None:
    assert parse_storage_event(events.EVENTBRIDGE_EVENT, load("eventbridge_restore_completed.json")) == []
    tagged = load("eventbridge_object_created.json") | {"detail-type": "Object Tags Added"}
    assert parse_storage_event(None, tagged) == []


def test_eventbridge_events_from_another_service_are_bad_events() -> None:
    with pytest.raises(BadEvent, match="only S3's") as info:
        parse_storage_event(events.EVENTBRIDGE_EVENT, load("eventbridge_object_created.json") | {"source": "aws.ec2"})
    assert "source: [aws.s3]" in info.value.hint
    unsafe = load("eventbridge_object_created.json")
    unsafe["detail"]["object"]["key"] = "../../etc/passwd"
    with pytest.raises(UnsafeKey):
        parse_storage_event(events.EVENTBRIDGE_EVENT, unsafe)


def test_unknown_type_names_it_and_lists_the_accepted_ones() -> None:
    with pytest.raises(BadEvent) as info:
        parse_storage_event("com.example.thing.v1", load("s3_put.json"))
    assert "com.example.thing.v1" in info.value.message
    assert all(t in info.value.message for t in ACCEPTED_TYPES)
    assert info.value.status == 400 and not info.value.retryable


def test_untyped_request_must_be_a_notification() -> None:
    with pytest.raises(BadEvent, match="Records"):
        parse_storage_event(None, load("gcs_finalized.json"))


@pytest.mark.parametrize(("event_type", "data", "message"), [
    (events.GCS_FINALIZED, b"{not json", "not valid JSON"),
    (events.GCS_FINALIZED, b"\xff\xfe", "not UTF-8"),
    (events.GCS_FINALIZED, "[1, 2]", "JSON object"),
    (events.GCS_FINALIZED, 42, "JSON object"),
    (events.GCS_FINALIZED, None, "JSON object"),
    (None, "", "not valid JSON"),
    (events.GCS_FINALIZED, {"name": "a.txt"}, "data.bucket is missing"),
    (events.GCS_FINALIZED, {"bucket": "b"}, "data.name is missing"),
    (events.GCS_FINALIZED, {"bucket": "b", "name": ""}, "data.name is empty"),
    (events.GCS_FINALIZED, {"bucket": "b", "name": 7}, "data.name must be a str"),
    (events.GCS_FINALIZED, {"bucket": "b", "name": "a", "generation": "abc"}, "data.generation"),
    (events.GCS_FINALIZED, {"bucket": "b", "name": "a", "size": "-3"}, "data.size"),
    (events.GCS_FINALIZED, {"bucket": "b", "name": "a", "metadata": ["x"]}, "data.metadata must be a dict"),
    (events.GCS_FINALIZED, {"bucket": "b", "name": "a", "metadata": {"ragfn-tenant": 3}}, "metadata"),
    (events.S3_NOTIFICATION, {"Records": {"a": 1}}, "Records"),
    (events.S3_NOTIFICATION, {"Records": ["x"]}, r"Records\[0\] must be an object"),
    (events.S3_NOTIFICATION, {"Records": [{"eventName": "ObjectCreated:Put"}]}, r"Records\[0\].s3 is missing"),
    (events.S3_NOTIFICATION, {"Body": "not json"}, "SQS/SNS message body is not valid JSON"),
    (events.S3_NOTIFICATION, {"Body": 5}, "JSON object"),
    (events.MINIO_NOTIFICATION, {"EventName": "s3:ObjectCreated:Put", "Key": "b/k"}, "Records"),
])
def test_malformed_payloads(event_type: str | None, data: object, message: str) -> None:
    with pytest.raises(BadEvent, match=message):
        parse_storage_event(event_type, data)


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        data = data[step]
    data[path[-1]] = value


@pytest.mark.parametrize(("field", "value", "message"), [
    ("key", None, "key is missing"), ("key", 12, "key must be a str"), ("sequencer", "zz", "sequencer"),
    ("sequencer", 12, "sequencer"), ("size", "big", "size"), ("size", True, "size"), ("eTag", [], "eTag"),
    ("userMetadata", "x", "userMetadata")])
def test_s3_bad_object_fields(field: str, value: object, message: str) -> None:
    data = load("s3_put.json")
    _set(data, ("Records", 0, "s3", "object", field), value)
    with pytest.raises(BadEvent, match=message):
        parse_storage_event(events.S3_NOTIFICATION, data)


@pytest.mark.parametrize("key", ["../etc/passwd", "a/../../b", "%2E%2E/secret", "..%2Fsecret", "a/..", "a%00b",
                                 "%2Fetc%2Fpasswd", "..\\windows"])
def test_unsafe_s3_keys(key: str) -> None:
    data = load("s3_put.json")
    data["Records"][0]["s3"]["object"]["key"] = key
    with pytest.raises(UnsafeKey):
        parse_storage_event(events.S3_NOTIFICATION, data)


@pytest.mark.parametrize("name", ["../x", "a/../b", "a\x00b", "/abs"])
def test_unsafe_gcs_names(name: str) -> None:
    with pytest.raises(UnsafeKey):
        parse_storage_event(events.GCS_FINALIZED, {"bucket": "b", "name": name})


@pytest.mark.parametrize("uri", ["s3://b/../k", "gs://b/a/../../k", "file:///srv/docs/../../etc/passwd",
                                 "file:///srv/a\x00b", "s3://b//k"])
def test_unsafe_ragfn_uris(uri: str) -> None:
    with pytest.raises(UnsafeKey):
        parse_storage_event(events.DOCUMENT_UPSERTED, {"uri": uri})


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return []
    out = []
    for key, child in items:
        out.append((*prefix, key))
        out += _paths(child, (*prefix, key))
    return out


@pytest.mark.parametrize(("event_type", "name"), [
    (events.GCS_FINALIZED, "gcs_finalized.json"), (events.S3_NOTIFICATION, "s3_put.json"),
    (events.MINIO_NOTIFICATION, "minio_put.json"), (None, "minio_delete.json"),
    (events.S3_NOTIFICATION, "s3_test_event.json"), (events.AWS_SQS_MESSAGE, "s3_put.json"),
    (events.AWS_SQS_MESSAGE, "sqs_wrapped_s3.json"), (events.EVENTBRIDGE_EVENT, "eventbridge_object_created.json"),
    (None, "eventbridge_object_deleted.json"), (events.AWS_SQS_MESSAGE, "eventbridge_object_created.json")])
def test_every_mutation_is_a_result_or_a_bad_event(event_type: str | None, name: str) -> None:
    """Remove every field, or give it every wrong type: never a KeyError, TypeError or AttributeError."""
    original = load(name)
    for path in _paths(original):
        for replacement in ("<delete>", None, 7, -1, True, "", "x", [], {}, [1], {"a": 1}, 1.5):
            data = copy.deepcopy(original)
            if replacement == "<delete>":
                parent = data
                for step in path[:-1]:
                    parent = parent[step]
                del parent[path[-1]]
            else:
                _set(data, path, replacement)
            try:
                result = parse_storage_event(event_type, data)
            except BadEvent:
                continue
            assert isinstance(result, list) and all(isinstance(c, ObjectChange) for c in result)
