"""Dead letters in a cluster: the dead-letter function keeps what a Knative Broker gives up on in a real Redis stream,
which `ragfn dlq` and the gateway's upload status read, beside `ragfn dev`'s files."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import uuid

import pytest
import redis
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent
from conftest import REDIS_URL as GATEWAY_REDIS_URL
from conftest import REPO, EventSink, free_port
from functions_framework import create_app

from ragfn.core.errors import BadEvent, Unavailable
from ragfn.eventing import events
from ragfn.eventing.dead_letters import DeadLetterStore, RedisDeadLetterStore, open_dead_letters, trigger_of

pytestmark = pytest.mark.integration
REDIS_URL = "redis://127.0.0.1:6379/15"
CHUNK_ERROR = {"error": "UnsupportedContent", "message": "file:///docs/a.pdf is binary, not text", "retryable": False}


@pytest.fixture
def prefix(monkeypatch, ragfn_env):
    """A key prefix of this test's own in Redis DB 15, as RAGFN_CACHE_PREFIX, removed afterwards."""
    name = f"dlqtest-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("RAGFN_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("RAGFN_CACHE_PREFIX", name)
    yield name
    server = redis.Redis.from_url(REDIS_URL)
    for key in server.scan_iter(f"{name}:*"):
        server.delete(key)


def stream(prefix: str) -> RedisDeadLetterStore:
    return RedisDeadLetterStore(redis.Redis.from_url(REDIS_URL), prefix)


def dead_letter_function():
    return create_app(target="handle", source=str(REPO / "functions" / "dead_letter" / "main.py"),
                      signature_type="http").test_client()


def dead_lettered(event: CloudEvent, *, dest: str = "http://ragfn-chunk.ragfn.svc.cluster.local", code: str = "400",
                  reply: dict | None = CHUNK_ERROR, structured: bool = False) -> tuple[dict, bytes]:
    """The event as a Knative Broker sends it to a deadLetterSink: with the knativeerror* extensions added."""
    extensions = {"knativeerrordest": dest, "knativeerrorcode": code}
    if reply is not None:
        extensions["knativeerrordata"] = base64.b64encode(json.dumps(reply).encode()[:1024]).decode()
    event = CloudEvent(event.get_attributes() | extensions, event.get_data())
    headers, body = (to_structured if structured else to_binary)(event)
    return dict(headers), body


def upserted(uri: str = "file:///docs/a.pdf") -> CloudEvent:
    return CloudEvent({"type": events.DOCUMENT_UPSERTED, "source": "ragfn", "id": "e1"},
                      {"uri": uri, "collection": "default"})


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
def test_the_function_keeps_a_knative_dead_letter_in_redis(prefix, structured):
    headers, body = dead_lettered(upserted(), structured=structured)
    response = dead_letter_function().post("/", headers=headers, data=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    letter, = stream(prefix).list()
    assert response.get_json() == {"stored": letter.id, "type": events.DOCUMENT_UPSERTED, "trigger": "ragfn-chunk"}
    assert (letter.trigger, letter.subscriber, letter.status, letter.attempts) == (
        "ragfn-chunk", "http://ragfn-chunk.ragfn.svc.cluster.local", 400, None)
    assert json.loads(letter.error) == CHUNK_ERROR  # the subscriber's reply, decoded from knativeerrordata
    assert letter.event["data"] == {"uri": "file:///docs/a.pdf", "collection": "default"}
    assert letter.event["type"] == events.DOCUMENT_UPSERTED and letter.event["id"] == "e1"
    assert letter.event["knativeerrorcode"] == "400"


def test_any_event_type_and_any_data_is_kept(prefix):
    binary = CloudEvent({"type": "com.example.image", "source": "cam", "datacontenttype": "image/png"},
                        b"\x89PNG\r\n\x1a\n")
    headers, body = dead_lettered(binary, code="500", reply=None)
    assert dead_letter_function().post("/", headers=headers, data=body).status_code == 200
    letter, = stream(prefix).list()
    assert letter.status == 500 and letter.error == "delivery failed"
    assert base64.b64decode(letter.event["data_base64"]) == b"\x89PNG\r\n\x1a\n"


def test_the_trigger_is_read_from_the_channel_based_brokers_filter_url():
    assert trigger_of("http://broker-filter.knative-eventing.svc.cluster.local/triggers/ragfn/ragfn-index/0a1b") \
        == "ragfn-index"
    assert trigger_of("http://ragfn-embed.ragfn.svc.cluster.local/") == "ragfn-embed"
    assert trigger_of("") == "unknown"


def test_junk_is_a_400_and_redis_down_is_a_503(prefix, monkeypatch):
    client = dead_letter_function()
    junk = client.post("/", data=b"not an event", headers={"content-type": "text/plain"})
    assert junk.status_code == 400 and "not a CloudEvent" in junk.get_json()["message"]
    monkeypatch.setenv("RAGFN_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    headers, body = dead_lettered(upserted())
    down = dead_letter_function().post("/", headers=headers, data=body)  # a fresh app: it reads the new setting
    assert down.status_code == 503 and down.get_json()["retryable"] is True  # the broker sends it again
    assert client.get("/").get_json() == {"function": "dead-letter", "ready": True}


def test_without_redis_letters_go_to_the_files_under_ragfn_home(ragfn_env):
    headers, body = dead_lettered(upserted())
    assert dead_letter_function().post("/", headers=headers, data=body).status_code == 200
    letter, = DeadLetterStore(ragfn_env.dead_letter_path).list()
    assert letter.trigger == "ragfn-chunk" and letter.status == 400


def test_the_stream_is_capped_and_read_by_id_time_and_removal(prefix):
    store = RedisDeadLetterStore(redis.Redis.from_url(REDIS_URL), prefix, max_letters=10)
    letters = [store.add(trigger="t", subscriber="http://s", status=503, error=f"n{i}", attempts=None,
                         event={"type": "x", "id": str(i)}) for i in range(400)]
    kept = store.list()
    # XADD trims approximately (whole stream nodes of 100), so the stream stays near the cap, never unbounded
    assert 10 <= len(kept) <= 150 and kept[-1].id == letters[-1].id and kept[-1].error == "n399"
    assert store.get(letters[-1].id).event["id"] == "399"
    store.remove(letters[-1].id)
    with pytest.raises(BadEvent, match="no dead letter"):
        store.get(letters[-1].id)
    with pytest.raises(BadEvent):
        store.get("../../etc")
    from datetime import datetime, timedelta, timezone

    assert store.list(since=datetime.now(timezone.utc) + timedelta(hours=1)) == []


def test_readers_see_files_and_redis_and_a_down_redis_is_unavailable(prefix, ragfn_env):
    settings = ragfn_env.model_copy(update={"redis_url": REDIS_URL, "cache_prefix": prefix})
    DeadLetterStore(settings.dead_letter_path).add(trigger="ragfn-embed", subscriber="http://e", status=500,
                                                   error="dev", attempts=3, event={"type": "a"})
    stream(prefix).add(trigger="ragfn-chunk", subscriber="http://c", status=400, error="cluster", attempts=None,
                       event={"type": "b"})
    both = open_dead_letters(settings)
    assert sorted(letter.error for letter in both.list()) == ["cluster", "dev"]
    for letter in both.list():
        assert both.get(letter.id) == letter
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with pytest.raises(Unavailable, match="dead-letter stream"):
        open_dead_letters(down).list()


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "ragfn", *args], cwd=REPO, env=dict(os.environ) | env,
                          capture_output=True, text=True, timeout=120)


def test_ragfn_dlq_lists_shows_replays_and_drops_cluster_letters(prefix, ragfn_env):
    for uri in ("file:///docs/a.pdf", "file:///docs/b.pdf"):
        headers, body = dead_lettered(upserted(uri))
        assert dead_letter_function().post("/", headers=headers, data=body).status_code == 200
    env = {"RAGFN_HOME": str(ragfn_env.home), "RAGFN_REDIS_URL": REDIS_URL, "RAGFN_CACHE_PREFIX": prefix}
    listed = cli("dlq", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    first, second = json.loads(listed.stdout)
    assert (first["trigger"], first["status"]) == ("ragfn-chunk", 400)
    shown = cli("dlq", "show", first["id"], env=env)
    assert json.loads(shown.stdout)["event"]["data"]["uri"] == "file:///docs/a.pdf"

    sink = EventSink()
    try:
        replayed = cli("dlq", "replay", first["id"], "--sink", sink.url, env=env)
        assert replayed.returncode == 0, replayed.stderr
        event, = sink.received
    finally:
        sink.server.shutdown()
    assert event["type"] == events.DOCUMENT_UPSERTED and event["id"] == "e1"
    assert event.get_data() == {"uri": "file:///docs/a.pdf", "collection": "default"}
    assert not any(k.startswith("knativeerror") for k in event.get_attributes())  # sent as it was first sent
    assert cli("dlq", "drop", second["id"], env=env).returncode == 0
    assert json.loads(cli("dlq", "list", "--json", env=env).stdout) == []
    missing = cli("dlq", "show", "nosuchletter", env=env)
    assert missing.returncode == 2 and "no dead letter" in missing.stderr
    nowhere = cli("dlq", "replay", "nosuchletter", env=env)
    assert nowhere.returncode == 2


def test_an_upload_that_the_cluster_dead_letters_shows_as_failed(gateway, event_sink, prefix, monkeypatch):
    """The chat's upload status in a cluster: chunk refuses the upload, Knative dead-letters the event to the
    dead-letter function, which keeps it in Redis, where the gateway finds it."""
    client, _ = gateway
    monkeypatch.setenv("RAGFN_REDIS_URL", GATEWAY_REDIS_URL)  # the gateway fixture's database, emptied after the test
    app = client()
    receipt = app.post("/v1/documents", data={"file": (io.BytesIO(b"\x00\x01\x02 not text"), "garbled.md")},
                       headers={"Authorization": "Bearer key-acme"}, content_type="multipart/form-data").get_json()
    announced, = event_sink.received
    chunk = create_app(target="handle", source=str(REPO / "functions" / "chunk" / "main.py"),
                       signature_type="http").test_client()
    headers, body = to_binary(announced)
    refused = chunk.post("/", headers=dict(headers), data=body)
    assert refused.status_code == 400

    def state() -> dict:
        response = app.get("/v1/documents/status", headers={"Authorization": "Bearer key-acme"}, query_string={
            "document_id": receipt["document_id"], "version": receipt["version"], "event_id": receipt["event_id"]})
        return response.get_json()

    assert state()["state"] == "queued"
    headers, body = dead_lettered(announced, code="400", reply=refused.get_json())
    assert dead_letter_function().post("/", headers=headers, data=body).status_code == 200
    failed = state()
    assert failed["state"] == "failed" and "binary" in failed["error"]


def test_the_upload_status_answers_while_the_dead_letter_stream_is_down(gateway, event_sink, monkeypatch):
    client, _ = gateway
    monkeypatch.setenv("RAGFN_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    app = client()
    receipt = app.post("/v1/documents", data={"file": (io.BytesIO(b"# Notes\n\nSome text.\n"), "notes.md")},
                       headers={"Authorization": "Bearer key-acme"}, content_type="multipart/form-data").get_json()
    response = app.get("/v1/documents/status", headers={"Authorization": "Bearer key-acme"}, query_string={
        "document_id": receipt["document_id"], "version": receipt["version"]})
    assert response.status_code == 200 and response.get_json()["state"] == "queued"
