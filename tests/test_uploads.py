"""Uploads through the ask gateway: /v1/me, POST /v1/documents and its progress, over real brokers and stores."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from pathlib import Path

import boto3
import httpx
import pytest
from cloudevents.http import CloudEvent
from conftest import REPO, Served, moto_s3
from functions_framework import create_app

from ragfn.core.config import Settings, load_settings
from ragfn.core.errors import ConfigError, UnsafeKey
from ragfn.eventing import events
from ragfn.eventing.broker import LocalBroker
from ragfn.eventing.dead_letters import DeadLetterStore
from ragfn.eventing.triggers import load_triggers
from ragfn.gateway.uploads import safe_filename
from ragfn.ingest.object_writer import ObjectWriter
from ragfn.ingest.objects import ObjectReader
from ragfn.ingest.pipeline import chunk_change, content_version, embed_batch, index_batch
from ragfn.ingest.storage_events import parse_storage_event
from ragfn.ingest.walk import IngestReport, ingest, ingest_uri
from ragfn.serve.runtime import Runtime

pytestmark = pytest.mark.integration
GUIDE = "# Deploying\n\nRun `kubectl apply -k` against the overlay.\n\n## Rollback\n\nApply the previous overlay.\n"


@pytest.fixture
def recorder(gateway, event_sink):
    return event_sink


@pytest.fixture
def pipeline(gateway, ragfn_env, monkeypatch):
    """The ingestion path behind the gateway: a LocalBroker routing by eventing/triggers to the real chunk, embed
    and index functions, each a functions-framework app on its own port; dead letters go to RAGFN_HOME."""
    triggers = [t for t in load_triggers(REPO / "eventing" / "triggers") if t.name in (
        "ragfn-chunk", "ragfn-embed", "ragfn-index")]
    broker = LocalBroker(triggers, {}, DeadLetterStore(ragfn_env.dead_letter_path))
    front = broker.serve("127.0.0.1", 0)
    threading.Thread(target=front.serve_forever, daemon=True).start()
    monkeypatch.setenv("K_SINK", f"http://127.0.0.1:{front.server_port}/")
    functions = {f"ragfn-{name}": Served(create_app(target="handle", signature_type="http",
                                                    source=str(REPO / "functions" / name / "main.py")))
                 for name in ("chunk", "embed", "index")}
    broker.subscribers.update({name: served.url for name, served in functions.items()})
    yield broker
    for served in [*functions.values()]:
        served.server.shutdown()
    front.shutdown()


def auth(key: str = "key-acme") -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(app, name: str, content: bytes, key: str = "key-acme", **form: str):
    return app.post("/v1/documents", data={"file": (_stream(content), name), **form}, headers=auth(key),
                    content_type="multipart/form-data")


def _stream(content: bytes) -> io.BytesIO:
    return io.BytesIO(content)


def status(app, receipt: dict, key: str = "key-acme", **extra: str) -> dict:
    response = app.get("/v1/documents/status", headers=auth(key), query_string={
        "document_id": receipt["document_id"], "version": receipt["version"], "collection": receipt["collection"],
        **extra})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def ingest_received(event: CloudEvent, settings: Settings) -> None:
    """What the chunk, embed and index functions would do with the event, in this process."""
    [change] = parse_storage_event(event["type"], event.get_data())
    ingest_uri(change, Runtime(settings), IngestReport())


# --- who am I ---------------------------------------------------------------------------------------------------

def test_every_route_needs_a_key(gateway):
    client, _ = gateway
    app = client()
    for response in (app.get("/v1/me"), app.post("/v1/documents", data={"file": (_stream(b"x"), "a.md")}),
                     app.get("/v1/documents/status?document_id=file:///x&version=v"),
                     app.get("/v1/me", headers=auth("wrong"))):
        assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert app.get("/").get_json() == {"function": "ask", "ready": True}  # the readiness probe is unchanged
    wrong = app.post("/v1/nothing", json={}, headers=auth())
    assert wrong.status_code == 400 and "/v1/documents" in wrong.get_json()["hint"]


def test_me_counts_only_the_callers_tenant(gateway, ragfn_env, tmp_path):
    client, root = gateway
    (root / "globex" / "more.md").write_text(GUIDE)
    ingest([str(root / "globex" / "more.md")], Runtime(ragfn_env), tenant="globex", collection="ops")
    app = client()
    acme = app.get("/v1/me", headers=auth()).get_json()
    entry = Runtime(ragfn_env).index.ledger_entry("default", f"file://{root}/acme/lists.md")
    assert acme == {"subject": "key:acme-app", "tenant": "acme", "groups": ["eng"],
                    "collections": {"default": {"documents": 1, "chunks": entry.chunks}}}
    globex = app.get("/v1/me", headers=auth("key-globex")).get_json()
    assert set(globex["collections"]) == {"default", "ops"} and globex["collections"]["ops"]["documents"] == 1


def test_me_says_when_the_vector_store_is_down(gateway):
    client, _ = gateway
    response = client(RAGFN_CHROMA_URL="http://127.0.0.1:1").get("/v1/me", headers=auth())
    assert response.status_code == 503 and response.get_json()["retryable"] is True


# --- uploads ----------------------------------------------------------------------------------------------------

def test_upload_is_stored_under_the_tenant_and_queued(recorder, gateway, ragfn_env):
    client, _ = gateway
    app = client()
    response = upload(app, "../../Deploy Guide.md", GUIDE.encode(), groups="eng")
    assert response.status_code == 202, response.get_json()
    receipt = response.get_json()
    folder = (ragfn_env.home / "uploads" / "tenants" / "acme" / "default" / "groups" / "eng").resolve()
    assert receipt == {"document_id": f"file://{folder}/Deploy Guide.md", "version": content_version(GUIDE.encode()),
                       "collection": "default", "event_id": receipt["event_id"], "state": "queued",
                       "bytes": len(GUIDE.encode())}
    assert (folder / "Deploy Guide.md").read_text() == GUIDE and not list(folder.glob(".*"))  # no temporary left
    [event] = recorder.received
    assert event["type"] == events.DOCUMENT_UPSERTED and event["id"] == receipt["event_id"]
    assert event.get_data() == {"uri": receipt["document_id"], "collection": "default", "tenant": "acme",
                                "groups": ["eng"], "version": None, "sequence": None, "content_type": None}


def test_progress_from_queued_through_indexing_to_indexed_then_replaced(recorder, gateway, ragfn_env):
    client, _ = gateway
    app = client()
    first = upload(app, "guide.md", (GUIDE * 3).encode()).get_json()
    assert status(app, first) == {"document_id": first["document_id"], "version": first["version"],
                                  "collection": "default", "state": "queued", "chunks_written": 0, "chunks": None,
                                  "error": None}
    # chunk, embed and index in this process, one small batch at a time, as the functions would
    runtime = Runtime(ragfn_env.model_copy(update={"max_event_bytes": 4096, "chunk_tokens": 24,
                                                   "chunk_overlap_tokens": 4}))
    [change] = parse_storage_event(recorder.received[0]["type"], recorder.received[0].get_data())
    batches = [out.data for out in chunk_change(change, runtime).events]
    assert len(batches) > 1
    embedded = [embed_batch(batch, runtime).events[0].data for batch in batches]
    index_batch(embedded[0], runtime)
    midway = status(app, first)
    assert midway["state"] == "indexing" and midway["chunks_written"] == len(batches[0].chunks)
    for batch in embedded[1:]:
        index_batch(batch, runtime)
    done = status(app, first)
    assert done["state"] == "indexed" and done["chunks"] == done["chunks_written"] == batches[0].total_chunks
    assert app.get("/v1/me", headers=auth()).get_json()["collections"]["default"]["documents"] == 2

    second = upload(app, "guide.md", GUIDE.encode()).get_json()  # the same name again replaces the document
    assert second["document_id"] == first["document_id"] and second["version"] != first["version"]
    # the first version is what the index holds (and answers from) until the second one is indexed
    assert status(app, second)["state"] == "queued" and status(app, first)["state"] == "indexed"
    ingest_received(recorder.received[1], ragfn_env)
    assert status(app, second)["state"] == "indexed" and status(app, first)["state"] == "replaced"


def test_the_real_pipeline_indexes_an_upload_and_dead_letters_a_garbled_one(pipeline, gateway, ragfn_env):
    client, _ = gateway
    app = client()
    good = upload(app, "guide.md", GUIDE.encode(), groups="eng").get_json()
    bad = upload(app, "garbled.md", b"\x00\x01\x02 not text").get_json()
    assert pipeline.wait_idle(60), pipeline.status()
    indexed = status(app, good)
    assert indexed["state"] == "indexed" and indexed["chunks"] >= 1
    failed = status(app, bad)
    assert failed["state"] == "failed" and "binary" in failed["error"]
    assert status(app, bad, event_id=bad["event_id"])["state"] == "failed"
    assert status(app, bad, event_id="0" * 32)["state"] == "queued"  # a letter of another upload is not this one's
    answer = app.post("/v1/ask", json={"question": "How do I roll back a deployment?"}, headers=auth()).get_json()
    assert any(c["source"] == good["document_id"] for c in answer["citations"])


def test_the_untenanted_space_uploads_to_shared(recorder, gateway, ragfn_env, monkeypatch, tmp_path):
    client, _ = gateway
    keys = tmp_path / "solo-keys.json"
    keys.write_text(json.dumps({hashlib.sha256(b"key-solo").hexdigest(): {"tenant": "", "groups": [], "name": "solo"}}))
    app = client(RAGFN_API_KEYS_FILE=str(keys))
    receipt = upload(app, "guide.md", GUIDE.encode(), key="key-solo").get_json()
    assert "/uploads/shared/default/all/guide.md" in receipt["document_id"]
    assert recorder.received[0].get_data()["tenant"] is None
    ingest_received(recorder.received[0], ragfn_env)
    assert status(app, receipt, key="key-solo")["state"] == "indexed"
    me = app.get("/v1/me", headers=auth("key-solo")).get_json()
    assert me["tenant"] == "" and me["collections"]["default"]["documents"] == 1


def test_groups_beyond_the_callers_are_forbidden(recorder, gateway, ragfn_env):
    client, _ = gateway
    response = upload(client(), "guide.md", GUIDE.encode(), groups="eng, finance")
    assert response.status_code == 403 and "finance" in response.get_json()["message"]
    assert not recorder.received and not (ragfn_env.home / "uploads").exists()


def test_bad_uploads_get_a_400_that_says_why(recorder, gateway, ragfn_env):
    client, _ = gateway
    app = client(RAGFN_MAX_OBJECT_BYTES="4096")
    cases = [(upload(app, "tool.exe", b"MZ"), ".md"),
             (upload(app, "empty.md", b""), "empty"),
             (upload(app, "big.md", b"x" * 5000), "4096"),
             (upload(app, "huge.md", b"x" * 200_000), "4096"),  # refused on its Content-Length, before reading
             (upload(app, "guide.md", b"# ok", collection="no/such"), "collection"),
             (upload(app, "...", b"# ok"), "name"),
             (app.post("/v1/documents", data={"other": "x"}, headers=auth(), content_type="multipart/form-data"),
              "file"),
             (app.post("/v1/documents", json={"file": "x"}, headers=auth()), "multipart")]
    for response, needle in cases:
        body = response.get_json()
        assert response.status_code == 400 and needle in f"{body['message']} {body.get('hint')}", body
    assert not recorder.received and not list((ragfn_env.home / "uploads").rglob("*.*"))
    missing = app.get("/v1/documents/status", headers=auth(), query_string={"document_id": "file:///x"})
    assert missing.status_code == 400 and "version" in missing.get_json()["message"]


def test_a_body_over_the_limit_is_refused_over_real_http(recorder, gateway):
    client, _ = gateway
    served = Served(client(RAGFN_MAX_OBJECT_BYTES="4096").application)  # what functions-framework serves
    url, headers = f"{served.url}v1/documents", auth()

    def chunked():  # no Content-Length: the limit must hold while the body streams in
        for _ in range(50):
            yield b"x" * 100_000

    try:
        for response in (httpx.post(url, files={"file": ("big.md", b"x" * 5_000_000)}, headers=headers, timeout=30),
                         httpx.post(url, content=chunked(), timeout=30,
                                    headers=headers | {"Content-Type": "multipart/form-data; boundary=b"})):
            assert response.status_code == 400 and response.json()["error"] == "ObjectTooLarge", response.text
        assert not recorder.received
    finally:
        served.server.shutdown()


def test_no_sink_is_an_error_and_writes_nothing(gateway, ragfn_env):
    client, _ = gateway
    response = upload(client(), "guide.md", GUIDE.encode())
    body = response.get_json()
    assert response.status_code == 503 and "K_SINK" in body["hint"], body
    assert not (ragfn_env.home / "uploads").exists()


def test_status_of_another_tenants_upload_is_not_found(recorder, gateway):
    client, root = gateway
    app = client()
    receipt = upload(app, "guide.md", GUIDE.encode()).get_json()
    for key, document_id in (("key-globex", receipt["document_id"]),  # globex asks about acme's upload
                             ("key-acme", f"file://{root}/acme/lists.md"),  # indexed, but not an upload
                             ("key-acme", receipt["document_id"].replace("guide.md", "other.md"))):
        response = app.get("/v1/documents/status", headers=auth(key), query_string={
            "document_id": document_id, "version": receipt["version"]})
        assert response.status_code == 404, response.get_json()
    assert app.get("/v1/documents/status", headers=auth("key-globex"), query_string={
        "document_id": receipt["document_id"], "version": receipt["version"], "collection": "other"}).status_code == 404


# Security: any member of a tenant could replace another group's upload by its name (tenants/<t>/<collection>/
# <name>), making an HR-only document readable tenant-wide, and the status route told whether a hidden name existed.
def test_an_upload_can_neither_replace_nor_reveal_one_its_caller_cannot_read(recorder, gateway, ragfn_env, tmp_path):
    client, _ = gateway
    keys = tmp_path / "acme-keys.json"
    keys.write_text(json.dumps({hashlib.sha256(k.encode()).hexdigest(): v for k, v in {
        "key-hr": {"tenant": "acme", "groups": ["hr"], "name": "hr"},
        "key-eng": {"tenant": "acme", "groups": ["eng"], "name": "eng"}}.items()}))
    app = client(RAGFN_API_KEYS_FILE=str(keys))
    secret = upload(app, "pay.md", b"# Pay\n\nBands are confidential.\n", groups="hr", key="key-hr").get_json()
    public = upload(app, "pay.md", b"# Pay\n\nEveryone earns the same.\n", key="key-eng").get_json()
    assert public["document_id"] != secret["document_id"]  # another object: the HR one is untouched
    hr_file = Path(secret["document_id"].removeprefix("file://"))
    assert hr_file.read_bytes() == b"# Pay\n\nBands are confidential.\n"
    assert [e.get_data()["groups"] for e in recorder.received] == [["hr"], []]
    assert upload(app, "pay.md", b"x", groups="hr", key="key-eng").status_code == 403
    hidden = status_response(app, secret, key="key-eng")
    missing = status_response(app, secret | {"document_id": secret["document_id"].replace("pay.md", "nope.md")},
                              key="key-eng")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.get_json()["message"].replace("pay.md", "nope.md") == missing.get_json()["message"]
    assert status_response(app, secret, key="key-hr").status_code == 200
    assert status_response(app, public, key="key-hr").status_code == 200  # tenant-wide: everyone may read it


def status_response(app, receipt: dict, *, key: str):
    return app.get("/v1/documents/status", headers=auth(key), query_string={
        "document_id": receipt["document_id"], "version": receipt["version"], "collection": receipt["collection"]})


# --- s3:// ------------------------------------------------------------------------------------------------------

@pytest.fixture
def s3():
    with moto_s3() as endpoint:
        yield endpoint


@pytest.mark.parametrize("versioned", [False, True])
def test_s3_upload_writes_the_object_with_its_labels(s3, versioned, recorder, gateway, ragfn_env):
    client, _ = gateway
    bucket = boto3.client("s3", endpoint_url=s3)
    bucket.create_bucket(Bucket="uploads")
    if versioned:
        bucket.put_bucket_versioning(Bucket="uploads", VersioningConfiguration={"Status": "Enabled"})
    app = client(RAGFN_UPLOAD_URI="s3://uploads/incoming", RAGFN_S3_ENDPOINT_URL=s3)
    receipt = upload(app, "guide.md", GUIDE.encode(), groups="eng").get_json()
    assert receipt["document_id"] == "s3://uploads/incoming/tenants/acme/default/groups/eng/guide.md", receipt
    head = bucket.head_object(Bucket="uploads", Key="incoming/tenants/acme/default/groups/eng/guide.md")
    assert head["Metadata"] == {"ragfn-tenant": "acme", "ragfn-groups": "eng", "ragfn-collection": "default"}
    assert head["ContentType"] == "text/markdown"
    assert receipt["version"] == (head["VersionId"] if versioned else head["ETag"].strip('"'))
    assert status(app, receipt)["state"] == "queued"
    ingest_received(recorder.received[0], ragfn_env.model_copy(update={"s3_endpoint_url": s3}))
    assert status(app, receipt)["state"] == "indexed"  # the index holds the version the upload reported


# --- the pieces -------------------------------------------------------------------------------------------------

def test_the_upload_folder_is_always_a_trusted_root(tmp_path, monkeypatch):
    tmp_path = tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    settings = Settings(home=Path("state"), file_roots=[tmp_path / "docs"])
    assert settings.resolved_upload_uri() == f"file://{tmp_path}/state/uploads/"
    assert settings.resolved_file_roots() == [tmp_path / "docs", tmp_path / "state" / "uploads"]
    assert Settings(upload_uri="s3://b/up").resolved_upload_uri() == "s3://b/up/"
    assert Settings(upload_uri="gs://b").resolved_upload_uri() == "gs://b/"
    elsewhere = Settings(upload_uri=f"file://{tmp_path}/up/", file_roots=[tmp_path / "docs"])
    assert elsewhere.resolved_file_roots() == [tmp_path / "docs", tmp_path / "up"]
    with pytest.raises(ConfigError, match="RAGFN_UPLOAD_URI"):
        load_settings(upload_uri="ftp://nope/")


def test_the_writer_replaces_files_atomically_inside_the_roots(tmp_path):
    settings = Settings(home=tmp_path / "home", file_roots=[tmp_path / "docs"])
    reader = ObjectReader(settings)
    writer = ObjectWriter(reader)
    uri = f"{settings.resolved_upload_uri()}t/a.md"
    first = writer.write(uri, b"one")
    assert first.version is None and reader.read(uri).data == b"one"
    writer.write(uri, b"two")
    assert reader.read(uri).data == b"two" and reader.head(uri).size == 3
    assert sorted(p.name for p in (tmp_path / "home" / "uploads" / "t").iterdir()) == ["a.md"]
    with pytest.raises(UnsafeKey):
        writer.write(f"file://{tmp_path}/outside.md", b"x")


def test_file_names_are_made_safe():
    assert safe_filename("C:\\Users\\me\\notes.md") == "notes.md"
    assert safe_filename("../../etc/passwd.md") == "passwd.md"
    assert safe_filename(" .hidden.md ") == "hidden.md"
    assert safe_filename("a\x00b\nc.md") == "a_b_c.md"
    long = safe_filename("x" * 400 + ".md")
    assert long.endswith(".md") and len(long.encode()) <= 200
