"""The bucket-events function (GCS Pub/Sub pushes, MinIO webhooks) publishing to a real sink, and the chunk function
taking what it and the S3 IntegrationSource publish, against moto S3 and the GCS emulator."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from urllib.parse import unquote_plus

import boto3
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from conftest import REPO, EventSink, free_port, gcs_emulator, moto_s3
from functions_framework import create_app

from ragfn.eventing import events
from ragfn.ingest.storage_events import ObjectChange, parse_storage_event

pytestmark = pytest.mark.integration
PAYLOADS = REPO / "tests" / "payloads"


def load(name: str) -> dict:
    return json.loads((PAYLOADS / name).read_text())


def function(folder: str):
    return create_app(target="handle", source=str(REPO / "functions" / folder / "main.py"),
                      signature_type="http").test_client()


def push(resource: dict | None, event_type: str = "OBJECT_FINALIZE", message_id: str = "2070443601311540",
         **attributes: str) -> dict:
    """A Pub/Sub push request body for a Cloud Storage notification (payload format JSON_API_V1)."""
    message = {"attributes": {"notificationConfig": "projects/_/buckets/ragfn-docs/notificationConfigs/3",
                              "eventType": event_type, "payloadFormat": "JSON_API_V1", "bucketId": "ragfn-docs",
                              "objectId": "handbook/onboarding guide.md", "objectGeneration": "1712345678901234",
                              "eventTime": "2024-04-05T19:34:38.901000Z", **attributes},
               "messageId": message_id, "message_id": message_id,
               "publishTime": "2024-04-05T19:34:39.120Z", "publish_time": "2024-04-05T19:34:39.120Z"}
    if resource is not None:
        message["data"] = base64.b64encode(json.dumps(resource).encode()).decode()
    return {"message": message, "subscription": "projects/ragfn-demo/subscriptions/ragfn-docs-push"}


def received_change(sink: EventSink) -> ObjectChange:
    event, = sink.received
    change, = parse_storage_event(event["type"], event.get_data())
    return change


# --- GCS through Pub/Sub push --------------------------------------------------------------------------------------

def test_a_finalize_push_becomes_the_eventarc_event(event_sink):
    response = function("bucket_events").post("/", json=push(load("gcs_finalized.json")))
    assert response.status_code == 200, response.get_data(as_text=True)
    event, = event_sink.received
    assert event["type"] == events.GCS_FINALIZED
    assert event["source"] == "//storage.googleapis.com/projects/_/buckets/ragfn-docs"
    assert event["subject"] == "objects/handbook/onboarding guide.md"
    assert event["time"].startswith("2024-04-05T19:34:38")
    assert received_change(event_sink) == parse_storage_event(events.GCS_FINALIZED, load("gcs_finalized.json"))[0]
    assert response.get_json()["published"] == [{"type": events.GCS_FINALIZED, "id": event["id"],
                                                 "subject": "objects/handbook/onboarding guide.md"}]


def test_a_redelivered_push_publishes_the_same_event_id(event_sink):
    client = function("bucket_events")
    for _ in range(2):
        assert client.post("/", json=push(load("gcs_finalized.json"))).status_code == 200
    assert event_sink.received[0]["id"] == event_sink.received[1]["id"]
    assert client.post("/", json=push(load("gcs_finalized.json"), message_id="99")).status_code == 200
    assert event_sink.received[2]["id"] != event_sink.received[0]["id"]


@pytest.mark.parametrize("event_type", ["OBJECT_DELETE", "OBJECT_ARCHIVE"])
def test_delete_and_archive_pushes_become_deleted(event_sink, event_type):
    response = function("bucket_events").post("/", json=push(load("gcs_deleted.json"), event_type))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert event_sink.received[0]["type"] == events.GCS_DELETED
    change = received_change(event_sink)
    assert (change.action, change.uri, change.sequence) == ("delete", "gs://ragfn-docs/handbook/onboarding guide.md",
                                                           1712345678901234)


@pytest.mark.parametrize(("event_type", "attributes", "why"), [
    ("OBJECT_METADATA_UPDATE", {}, "OBJECT_METADATA_UPDATE changes no document"),
    ("OBJECT_DELETE", {"overwrittenByGeneration": "1712345678909999"}, "replaced by 1712345678909999"),
    ("OBJECT_RESTORE", {}, "changes no document"),  # a type GCS may add: acknowledged, not retried forever
])
def test_pushes_that_change_no_document_are_acknowledged_and_ignored(event_sink, event_type, attributes, why):
    response = function("bucket_events").post("/", json=push(load("gcs_deleted.json"), event_type, **attributes))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert why in response.get_json()["ignored"] and event_sink.received == []


def test_a_push_without_payload_uses_the_attributes(event_sink):
    body = push(None, payloadFormat="NONE")
    assert function("bucket_events").post("/", json=body).status_code == 200
    change = received_change(event_sink)
    assert (change.uri, change.version, change.sequence) == ("gs://ragfn-docs/handbook/onboarding guide.md",
                                                            "1712345678901234", 1712345678901234)


# --- MinIO webhook -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["minio_put.json", "minio_delete.json"])
def test_a_minio_webhook_post_is_republished_as_a_minio_event(event_sink, name):
    response = function("bucket_events").post("/", json=load(name))  # plain JSON, no ce-* headers, as MinIO sends
    assert response.status_code == 200, response.get_data(as_text=True)
    event, = event_sink.received
    assert (event["type"], event["source"], event["subject"]) == (events.MINIO_NOTIFICATION, "minio:s3/docs",
                                                                  load(name)["Key"])
    assert event.get_data() == load(name)  # passed through as sent: chunk parses MinIO's own format
    assert received_change(event_sink) == parse_storage_event(None, load(name))[0]


def test_s3_style_posts_keep_their_origin_and_test_events_are_ignored(event_sink):
    client = function("bucket_events")
    assert client.post("/", json=load("s3_put.json")).status_code == 200
    assert event_sink.received[0]["type"] == events.S3_NOTIFICATION
    response = client.post("/", json=load("s3_test_event.json"))
    assert response.status_code == 200 and "changes no document" in response.get_json()["ignored"]
    assert len(event_sink.received) == 1


def test_an_eventbridge_api_destination_post_is_republished_as_an_eventbridge_event(event_sink):
    client = function("bucket_events")
    body = load("eventbridge_object_created.json")
    response = client.post("/", json=body)  # EventBridge's API destination posts the event as it is
    assert response.status_code == 200, response.get_data(as_text=True)
    assert client.post("/", json=body).status_code == 200  # EventBridge retries a target with the same event id
    first, again = event_sink.received
    assert (first["type"], first["source"], first["subject"]) == (
        events.EVENTBRIDGE_EVENT, "aws.s3/amzn-s3-demo-bucket1", "reports/Quarterly Report+Q3 (2021).md")
    assert first["id"] == again["id"] and first["time"] == "2021-11-12T00:00:00Z"
    assert parse_storage_event(first["type"], first.get_data()) == parse_storage_event(None, body)
    ignored = client.post("/", json=load("eventbridge_restore_completed.json"))
    assert ignored.status_code == 200
    assert "Object Restore Completed changes no document" in ignored.get_json()["ignored"]
    assert len(event_sink.received) == 2


# Security: an EventBridge event that also carried a 'Records' field that was not a list was a 500 (the adapter
# indexed it as a notification's records after the parser had accepted the EventBridge event).
@pytest.mark.parametrize("records", [{"a": 1}, 5, "x", [], [7]])
def test_an_eventbridge_event_with_a_junk_records_field_is_still_an_eventbridge_event(event_sink, records):
    response = function("bucket_events").post("/", json=load("eventbridge_object_created.json") | {"Records": records})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [e["type"] for e in event_sink.received] == [events.EVENTBRIDGE_EVENT]


# --- junk, auth and a broker that is down ---------------------------------------------------------------------------

def _unsafe_push() -> dict:
    resource = load("gcs_finalized.json") | {"name": "../../etc/passwd"}
    return push(resource)


@pytest.mark.parametrize(("body", "message"), [
    ([1, 2], "must be a JSON object"),
    ({"hello": "world"}, "neither a Pub/Sub push envelope"),
    ({"message": "x"}, "message must be an object"),
    ({"message": {"attributes": {"bucketId": "b"}, "messageId": "1"}}, "eventType is missing"),
    ({"message": {"attributes": {"eventType": "OBJECT_FINALIZE", "n": 3}}}, "map names to strings"),
    (push(None, objectId=""), "data.name is empty"),
    ({**push(None), "message": {**push(None)["message"], "data": "%%%"}}, "not base64"),
    ({**push(None), "message": {**push(None)["message"], "data": base64.b64encode(b"[1]").decode()}}, "JSON object"),
    ({**push(load("gcs_finalized.json")), "message": {**push(load("gcs_finalized.json"))["message"],
                                                      "messageId": None, "message_id": None}}, "messageId"),
    (_unsafe_push(), "outside|\\.\\."),
    ({"EventName": "s3:ObjectCreated:Put", "Key": "b/k"}, "Records"),
])
def test_junk_is_a_400_that_names_the_problem_and_publishes_nothing(event_sink, body, message):
    response = function("bucket_events").post("/", json=body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["retryable"] is False
    assert re.search(message, response.get_json()["message"]), response.get_json()
    assert event_sink.received == []


def test_a_cloudevent_is_refused(event_sink):
    headers, body = to_binary(CloudEvent({"type": events.GCS_FINALIZED, "source": "x"}, load("gcs_finalized.json")))
    response = function("bucket_events").post("/", headers=dict(headers), data=body)
    assert response.status_code == 400 and "unknown event type" in response.get_json()["message"]


@pytest.mark.parametrize("broker", ["answers 503", "is unreachable"])
def test_a_broker_that_is_down_is_a_503_so_the_sender_retries(ragfn_env, monkeypatch, broker):
    sink = EventSink(status=503) if broker == "answers 503" else None
    monkeypatch.setenv("K_SINK", sink.url if sink else f"http://127.0.0.1:{free_port()}/")
    try:
        response = function("bucket_events").post("/", json=push(load("gcs_finalized.json")))
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.get_json()["retryable"] is True
    finally:
        if sink:
            sink.server.shutdown()


# Security: a bucket sender's key (in the chat users' key file, or in the push URL) could index any readable
# object, of any bucket, into any tenant.
def test_senders_have_keys_of_their_own_in_headers_only_and_prefixes(event_sink, monkeypatch, tmp_path):
    chat_keys = tmp_path / "keys.json"
    chat_keys.write_text(json.dumps({hashlib.sha256(b"svc-key").hexdigest(): {"tenant": "", "groups": [],
                                                                                "name": "old-service-key"}}))
    senders = tmp_path / "senders.json"
    senders.write_text(json.dumps({
        hashlib.sha256(b"minio-key").hexdigest(): {"name": "minio", "prefixes": ["s3://docs/handbook/"]},
        hashlib.sha256(b"other-key").hexdigest(): {"name": "other", "prefixes": ["s3://docsx/"]}}))
    monkeypatch.setenv("RAGFN_API_KEYS_FILE", str(chat_keys))
    monkeypatch.setenv("RAGFN_SENDER_KEYS_FILE", str(senders))
    client, body = function("bucket_events"), load("minio_put.json")  # s3://docs/handbook/vacation policy.md
    for headers, query in (({}, ""), ({"Authorization": "Bearer svc-key"}, ""),  # a key of the chat users' file
                           ({"Authorization": "Bearer wrong"}, ""), ({}, "?token=minio-key")):  # never in the URL
        assert client.post("/" + query, json=body, headers=headers).status_code == 401, (headers, query)
    # the sender is checked from the headers before a byte of the body is read, and the body is capped
    unread = client.post("/", data=b"[" * (3 * 2**20), headers={"content-type": "application/json"})
    assert unread.status_code == 401
    too_big = client.post("/", data=b" " * (3 * 2**20), headers={"Authorization": "Bearer minio-key",
                                                                  "content-type": "application/json"})
    assert too_big.status_code == 400 and "over the limit" in too_big.get_json()["message"]
    outside = client.post("/", json=body, headers={"Authorization": "Bearer other-key"})
    assert outside.status_code == 403 and "s3://docs/handbook/vacation policy.md" in outside.get_json()["message"]
    assert event_sink.received == []
    assert client.post("/", json=body, headers={"Authorization": "Bearer minio-key"}).status_code == 200
    assert len(event_sink.received) == 1


def test_a_pubsub_push_authenticates_with_its_oidc_token(event_sink, monkeypatch, tmp_path):
    """Google signs the push subscription's tokens; a local JWKS endpoint stands in for Google's (none is reachable
    here), with a key made for the test."""
    import time

    import jwt
    from conftest import Served
    from cryptography.hazmat.primitives.asymmetric import rsa
    from werkzeug.wrappers import Response

    google, stranger = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(google.public_key())) | {"kid": "k1", "alg": "RS256",
                                                                                   "use": "sig"}
    certs = Served(lambda environ, start: Response(json.dumps({"keys": [jwk]}), mimetype="application/json")(
        environ, start))
    senders = tmp_path / "senders.json"
    senders.write_text(json.dumps({"pubsub:push@proj.iam.gserviceaccount.com": {
        "name": "gcs", "prefixes": ["gs://ragfn-docs/handbook/"]}}))
    monkeypatch.setenv("RAGFN_SENDER_KEYS_FILE", str(senders))
    monkeypatch.setenv("RAGFN_PUBSUB_AUDIENCE", "https://ragfn-bucket-events.example.com")
    monkeypatch.setenv("RAGFN_PUBSUB_JWKS_URL", certs.url)

    def token(key=google, **claims) -> dict[str, str]:
        now = int(time.time())
        body = {"iss": "https://accounts.google.com", "aud": "https://ragfn-bucket-events.example.com", "iat": now,
                "exp": now + 300, "email": "push@proj.iam.gserviceaccount.com", "email_verified": True} | claims
        return {"Authorization": "Bearer " + jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})}

    client = function("bucket_events")
    try:
        unknown_kid = {"Authorization": token()["Authorization"].replace(
            token()["Authorization"].split(".")[0].removeprefix("Bearer "),
            base64.urlsafe_b64encode(b'{"alg":"RS256","kid":"nope","typ":"JWT"}').decode().rstrip("="))}
        for headers in (token(aud="https://elsewhere"), token(email_verified=False), token(stranger),
                        token(email="other@proj.iam.gserviceaccount.com"), token(exp=int(time.time()) - 60),
                        unknown_kid):
            assert client.post("/", json=push(load("gcs_finalized.json")), headers=headers).status_code == 401
        assert event_sink.received == []
        assert client.post("/", json=push(load("gcs_finalized.json")), headers=token()).status_code == 200
    finally:
        certs.server.shutdown()
    assert len(event_sink.received) == 1


def test_get_is_a_readiness_probe(ragfn_env):
    assert function("bucket_events").get("/").get_json() == {"function": "bucket-events", "ready": True}


# --- what chunk makes of it, against real object stores -------------------------------------------------------------

@pytest.fixture
def chunk_sink(event_sink):
    return event_sink


def chunk(event: CloudEvent):
    headers, body = to_binary(event)
    return function("chunk").post("/", headers=dict(headers), data=body)


def adapter_then_chunk(body: dict, monkeypatch) -> events.ChunkBatch:
    """What the bucket-events adapter publishes, delivered to the chunk function: its first chunk batch."""
    for name, deliver in (("bucket_events", lambda: function("bucket_events").post("/", json=body)),
                          ("chunk", lambda: chunk(forwarded))):
        sink = EventSink()
        monkeypatch.setenv("K_SINK", sink.url)
        try:
            response = deliver()
            assert response.status_code == 200, (name, response.get_data(as_text=True))
            forwarded = sink.received[0]
        finally:
            sink.server.shutdown()
    return events.ChunkBatch.model_validate(forwarded.get_data())


def test_minio_webhook_to_chunk_through_the_adapter(ragfn_env, monkeypatch):
    with moto_s3() as endpoint:
        monkeypatch.setenv("RAGFN_S3_ENDPOINT_URL", endpoint)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="docs")
        payload = load("minio_put.json")
        obj = payload["Records"][0]["s3"]["object"]
        # the labels the notification repeats are the object's own, which the chunk stage reads (never the claim)
        put = s3.put_object(Bucket="docs", Key=unquote_plus(obj["key"]), Body=b"# Leave\n\nTake 25 days a year.\n",
                            Metadata={"ragfn-tenant": "acme", "ragfn-groups": "hr,managers"})
        obj["eTag"] = put["ETag"].strip('"')
        batch = adapter_then_chunk(payload, monkeypatch)
    assert batch.document.document_id == "s3://docs/handbook/vacation policy.md"
    assert (batch.document.tenant, batch.document.groups) == ("acme", ["hr", "managers"])
    assert batch.chunks[0].text == "Take 25 days a year."


def test_gcs_push_to_chunk_through_the_adapter(ragfn_env, monkeypatch):
    with gcs_emulator("ragfn-docs") as bucket:
        blob = bucket.blob("handbook/onboarding guide.md")
        blob.metadata = {"ragfn-tenant": "acme", "ragfn-collection": "handbook"}
        blob.upload_from_string(b"# Onboarding\n\nAsk for a laptop on day one.\n", content_type="text/markdown")
        blob.reload()
        resource = load("gcs_finalized.json") | {"generation": str(blob.generation), "size": str(blob.size)}
        batch = adapter_then_chunk(push(resource, objectGeneration=str(blob.generation)), monkeypatch)
    assert batch.document.document_id == "gs://ragfn-docs/handbook/onboarding guide.md"
    assert batch.document.version == str(blob.generation) and batch.document.collection == "handbook"


# --- S3 through SQS and Knative's IntegrationSource ------------------------------------------------------------------

def sqs_event(body: str, **extensions: str) -> CloudEvent:
    """What the IntegrationSource (aws.sqs) posts: the queue message's body as data, under Knative's connector type."""
    return CloudEvent({"type": events.AWS_SQS_MESSAGE, "source": "dev.knative.eventing.aws-sqs-source",
                       "subject": "aws-sqs-source", "id": "9CC70D09569020C-0000000000000001",
                       "datacontenttype": "application/json", **extensions}, body.encode())


@pytest.mark.parametrize("wrapping", ["direct", "sns"])
def test_an_integrationsource_sqs_message_is_chunked(ragfn_env, monkeypatch, wrapping):
    with moto_s3() as endpoint:
        monkeypatch.setenv("RAGFN_S3_ENDPOINT_URL", endpoint)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="amzn-s3-demo-bucket")
        notification = json.loads(load("sqs_wrapped_s3.json")["Body"])  # the S3 notification an SQS body holds
        obj = notification["Records"][0]["s3"]["object"]
        put = s3.put_object(Bucket="amzn-s3-demo-bucket", Key=unquote_plus(obj["key"]),
                            Body=b"# Q1\n\nRevenue grew 12 percent.\n")
        obj["eTag"] = put["ETag"].strip('"')
        body = json.dumps(notification)
        if wrapping == "sns":  # S3 -> SNS -> SQS without raw message delivery
            body = json.dumps({"Type": "Notification", "MessageId": "n-1", "TopicArn": "arn:aws:sns:us-west-2:1:t",
                               "Subject": "Amazon S3 Notification", "Message": body,
                               "Timestamp": "2024-04-05T19:34:39.003Z", "SignatureVersion": "1"})
        sink = EventSink()
        monkeypatch.setenv("K_SINK", sink.url)
        response = chunk(sqs_event(body, ragfncollection="reports"))  # ceOverrides in the IntegrationSource
        assert response.status_code == 200, response.get_data(as_text=True)
        batch = events.ChunkBatch.model_validate(sink.received[0].get_data())
        sink.server.shutdown()
    assert batch.document.document_id == "s3://amzn-s3-demo-bucket/reports/Quarterly Report (2024).md"
    assert batch.document.collection == "reports" and batch.chunks[0].text == "Revenue grew 12 percent."


@pytest.mark.parametrize("route", ["sqs", "cloudevent", "bucket-events"])
def test_an_eventbridge_event_is_chunked_by_every_route(ragfn_env, monkeypatch, route):
    """S3 -> EventBridge -> (an SQS queue and the IntegrationSource | an EventBridge source's CloudEvent | an API
    destination to bucket-events) -> chunk, against a real (moto) bucket."""
    with moto_s3() as endpoint:
        monkeypatch.setenv("RAGFN_S3_ENDPOINT_URL", endpoint)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="amzn-s3-demo-bucket1")
        body = load("eventbridge_object_created.json")
        obj = body["detail"]["object"]
        put = s3.put_object(Bucket="amzn-s3-demo-bucket1", Key=obj["key"], Body=b"# Q3\n\nMargins rose 4 percent.\n",
                            Metadata={"ragfn-tenant": "acme"})
        obj["etag"], obj["version-id"] = put["ETag"].strip('"'), None
        if route == "bucket-events":
            batch = adapter_then_chunk(body, monkeypatch)
        else:
            sink = EventSink()
            monkeypatch.setenv("K_SINK", sink.url)
            event = sqs_event(json.dumps(body)) if route == "sqs" else CloudEvent(
                {"type": events.EVENTBRIDGE_EVENT, "source": "arn:aws:events:ca-central-1:111122223333:rule/ragfn"},
                body)
            response = chunk(event)
            assert response.status_code == 200, response.get_data(as_text=True)
            batch = events.ChunkBatch.model_validate(sink.received[0].get_data())
            sink.server.shutdown()
    assert batch.document.document_id == "s3://amzn-s3-demo-bucket1/reports/Quarterly Report+Q3 (2021).md"
    assert batch.document.tenant == "acme" and batch.chunks[0].text == "Margins rose 4 percent."


def test_an_sqs_message_that_is_no_notification_is_a_400(chunk_sink):
    response = chunk(sqs_event('{"hello": "world"}'))
    assert response.status_code == 400 and "Records" in response.get_json()["message"]
    assert chunk(sqs_event(json.dumps(load("s3_test_event.json")))).status_code == 200  # sent when S3 is wired up
    assert chunk_sink.received == []

