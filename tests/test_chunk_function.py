"""The chunk function in-process (functions-framework test client) publishing to a real HTTP sink."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote_plus

import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from conftest import gcs_emulator, moto_s3
from functions_framework import create_app

from ragfn.eventing import events

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent
PAYLOADS = REPO / "tests" / "payloads"


@pytest.fixture
def sink(event_sink):
    return event_sink


def chunk_client():
    return create_app(target="handle", source=str(REPO / "functions" / "chunk" / "main.py"),
                      signature_type="http").test_client()


def upsert(path_or_uri: str, **extra) -> tuple[dict, bytes]:
    uri = path_or_uri if "://" in path_or_uri else f"file://{path_or_uri}"
    event = CloudEvent({"type": events.DOCUMENT_UPSERTED, "source": "test"}, {"uri": uri, **extra})
    headers, body = to_binary(event)
    return dict(headers), body


def test_a_large_document_fans_out_in_small_batches(sink, ragfn_env, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGFN_MAX_EVENT_BYTES", str(64 * 1024))
    text = "\n\n".join(f"## Section {i}\n\n" + " ".join(f"word{i}x{j}" for j in range(150)) for i in range(60))
    (tmp_path / "big.md").write_text(text)
    response = chunk_client().post("/", **dict(zip(("headers", "data"), upsert(str(tmp_path / "big.md")))))
    assert response.status_code == 200, response.get_data(as_text=True)
    summary = response.get_json()["documents"][0]
    batches = [events.ChunkBatch.model_validate(e.get_data()) for e in sink.received]
    assert len(batches) == summary["batches"] > 1
    assert sum(len(b.chunks) for b in batches) == summary["chunks"] == batches[0].total_chunks
    # every event leaves room for the vectors embed adds, and all stay far below 1 MB
    assert max(sink.sizes) + 8192 * max(len(b.chunks) for b in batches) <= 64 * 1024
    assert all(e["type"] == events.CHUNKS and e["traceparent"] for e in sink.received)
    assert sorted(c.number for b in batches for c in b.chunks) == list(range(summary["chunks"]))


@pytest.mark.parametrize("name, content, expected", [
    ("empty.txt", b"", "empty"),
    ("blank.md", b"  \n\n \t\n", "empty"),
    ("binary.txt", b"\x00\x01\x02\x03\xff\xfe\x00\x00" * 10, "binary"),
    ("latin1.txt", "caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"), "UTF-8"),
    ("broken.pdf", b"%PDF-1.7\n garbage", "PDF"),
    ("big.txt", b"x" * 5000, "RAGFN_MAX_OBJECT_BYTES"),
    # Security: a small object could chunk into any number of chunks, each then embedded and stored
    ("many.txt", "\n\n".join(f"paragraph {n} " + "word " * 120 for n in range(6)).encode()[:4000],
     "RAGFN_MAX_CHUNKS_PER_OBJECT=3"),
])
def test_bad_objects_get_400_and_publish_nothing(sink, tmp_path, monkeypatch, name, content, expected):
    monkeypatch.setenv("RAGFN_MAX_OBJECT_BYTES", "4096")
    monkeypatch.setenv("RAGFN_MAX_CHUNKS_PER_OBJECT", "3")
    (tmp_path / name).write_bytes(content)
    headers, body = upsert(str(tmp_path / name))
    response = chunk_client().post("/", headers=headers, data=body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert expected.lower() in json.dumps(response.get_json()).lower()  # message or hint
    assert sink.received == []


@pytest.mark.parametrize("uri, expected", [
    ("file:///etc/passwd", "RAGFN_FILE_ROOTS"),
    ("s3://bucket/../../etc/passwd", ".."),
    ("ftp://host/file.txt", "scheme"),
])
def test_unsafe_or_unsupported_uris_are_refused(sink, uri, expected):
    headers, body = upsert(uri)
    response = chunk_client().post("/", headers=headers, data=body)
    assert response.status_code == 400 and expected in json.dumps(response.get_json())
    assert sink.received == []


def test_malformed_and_unknown_events(sink):
    client = chunk_client()
    bad_json = client.post("/", data=b"{not json", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and "JSON" in bad_json.get_json()["message"]
    missing = client.post("/", data=b"{}", headers={"ce-specversion": "1.0", "ce-type": events.DOCUMENT_UPSERTED,
                                                     "content-type": "application/json"})
    assert missing.status_code == 400
    headers, body = to_binary(CloudEvent({"type": "com.example.other", "source": "x"}, {"a": 1}))
    unknown = client.post("/", headers=dict(headers), data=body)
    assert unknown.status_code == 400 and "com.example.other" in unknown.get_json()["message"]
    headers, body = to_binary(CloudEvent({"type": events.DOCUMENT_UPSERTED, "source": "x"}, {"url": "typo"}))
    wrong = client.post("/", headers=dict(headers), data=body)
    assert wrong.status_code == 400 and "uri" in wrong.get_json()["message"]
    assert sink.received == []


def test_delete_event_becomes_a_tombstone(sink, tmp_path):
    event = CloudEvent({"type": events.DOCUMENT_DELETED, "source": "t"},
                       {"uri": f"file://{tmp_path}/gone.md", "sequence": 42})
    headers, body = to_binary(event)
    response = chunk_client().post("/", headers=dict(headers), data=body)
    assert response.status_code == 200
    tomb, = sink.received
    assert tomb["type"] == events.DOCUMENT_TOMBSTONED
    assert tomb.get_data() == {"collection": "default", "document_id": f"file://{tmp_path}/gone.md",
                               "sequence": events.sequence_key(42)}


def test_sink_down_is_retryable(ragfn_env, tmp_path, monkeypatch):
    monkeypatch.setenv("K_SINK", "http://127.0.0.1:9/")
    (tmp_path / "doc.md").write_text("# Hi\n\nSome text.\n")
    headers, body = upsert(str(tmp_path / "doc.md"))
    response = chunk_client().post("/", headers=headers, data=body)
    assert response.status_code == 503 and response.get_json()["retryable"] is True


def test_minio_webhook_without_envelope_reads_from_s3(sink, monkeypatch):
    import boto3

    with moto_s3() as endpoint:
        monkeypatch.setenv("RAGFN_S3_ENDPOINT_URL", endpoint)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="minio-docs")
        payload = json.loads((PAYLOADS / "minio_put.json").read_text())
        record = payload["Records"][0]["s3"]
        key = record["object"]["key"]
        put = s3.put_object(Bucket="minio-docs", Key=unquote_plus(key), Body=b"# MinIO\n\nObject from a webhook.\n")
        record["bucket"]["name"] = "minio-docs"
        record["object"]["eTag"] = put["ETag"].strip('"')
        payload["Key"] = f"minio-docs/{key}"
        response = chunk_client().post("/", json=payload)  # MinIO's webhook: plain JSON, no ce-* headers
    assert response.status_code == 200, response.get_data(as_text=True)
    batch, = sink.received
    data = events.ChunkBatch.model_validate(batch.get_data())
    assert data.document.document_id == f"s3://minio-docs/{unquote_plus(key)}"
    assert data.chunks[0].text == "Object from a webhook."


def test_gcs_finalized_event_reads_the_generation_from_storage(sink):
    with gcs_emulator("ragfn-docs") as bucket:
        blob = bucket.blob("handbook/onboarding guide.md")
        blob.metadata = {"ragfn-tenant": "acme", "ragfn-groups": "engineering, support"}
        blob.upload_from_string(b"# Onboarding\n\nAsk for a laptop on day one.\n", content_type="text/markdown")
        blob.reload()
        payload = json.loads((PAYLOADS / "gcs_finalized.json").read_text())
        payload |= {"generation": str(blob.generation), "size": str(blob.size)}
        event = CloudEvent({"type": events.GCS_FINALIZED, "source": "//storage.googleapis.com/projects/_/buckets/"
                            "ragfn-docs", "subject": "objects/handbook/onboarding guide.md"}, payload)
        headers, body = to_binary(event)
        response = chunk_client().post("/", headers=dict(headers), data=body)
        assert response.status_code == 200, response.get_data(as_text=True)
        batch, = sink.received
        data = events.ChunkBatch.model_validate(batch.get_data())
        assert data.document.document_id == "gs://ragfn-docs/handbook/onboarding guide.md"
        assert data.document.version == str(blob.generation)
        assert data.document.sequence == events.sequence_key(int(blob.generation))
        assert (data.document.collection, data.document.tenant) == ("handbook", "acme")
        assert data.document.groups == ["engineering", "support"]
        assert data.chunks[0].heading_path == ["Onboarding"]


def test_a_source_can_route_a_bucket_to_a_collection_with_an_extension(sink, monkeypatch):
    import boto3

    record = json.loads((PAYLOADS / "s3_delete.json").read_text())
    event = CloudEvent({"type": events.S3_NOTIFICATION, "source": "s3", "ragfncollection": "handbook"}, record)
    headers, body = to_binary(event)
    with moto_s3() as endpoint:  # the bucket, without the deleted object: the chunk stage checks that it is gone
        monkeypatch.setenv("RAGFN_S3_ENDPOINT_URL", endpoint)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=record["Records"][0]["s3"]["bucket"]["name"])
        response = chunk_client().post("/", headers=dict(headers), data=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    tomb, = sink.received
    assert tomb["type"] == events.DOCUMENT_TOMBSTONED and tomb.get_data()["collection"] == "handbook"
