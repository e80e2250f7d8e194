"""The resync function over real folders and a moto S3 bucket, against a real Chroma index: document.upserted for
every object, document.deleted for what is indexed but gone, page by page; and through the local broker, end to end."""

from __future__ import annotations

import threading

import boto3
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from conftest import REPO, Served, moto_s3
from functions_framework import create_app

from ragfn.eventing import events
from ragfn.eventing.broker import LocalBroker
from ragfn.eventing.dead_letters import DeadLetterStore
from ragfn.eventing.triggers import load_triggers
from ragfn.ingest.pipeline import chunk_change, remove_document
from ragfn.ingest.storage_events import ObjectChange, parse_storage_event
from ragfn.ingest.walk import IngestReport, ingest, ingest_uri
from ragfn.serve.runtime import Runtime

pytestmark = pytest.mark.integration
DOC = "# {title}\n\nThe {title} page says something worth finding.\n"


def resync_client():
    return create_app(target="handle", source=str(REPO / "functions" / "resync" / "main.py"),
                      signature_type="http").test_client()


def request(data: dict, event_type: str = events.RESYNC_REQUESTED, **attributes):
    event = CloudEvent({"type": event_type, "source": "test", "id": "run-1", **attributes}, data)
    headers, body = to_binary(event)
    return resync_client().post("/", headers=dict(headers), data=body)


def published(sink, event_type: str) -> list[dict]:
    return [event.get_data() for event in sink.received if event["type"] == event_type]


@pytest.fixture
def docs(ragfn_env, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("alpha", "beta", "gamma"):
        (folder / f"{name}.md").write_text(DOC.format(title=name))
    ingest([str(folder)], Runtime(ragfn_env))
    return folder


def test_every_object_is_announced_and_what_is_gone_is_deleted(docs, event_sink, ragfn_env):
    (docs / "gamma.md").unlink()
    (docs / "delta.md").write_text(DOC.format(title="delta"))
    (docs / "notes.bin").write_bytes(b"\x00")  # not a document type: a folder walk skips it, as `ragfn ingest` does
    response = request({"uri": f"file://{docs}/", "prune": True})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"uri": f"file://{docs}/", "collection": "default", "listed": 3, "upserted": 3,
                                   "deleted": 1, "remaining": 0, "next_start_after": None}
    assert sorted(d["uri"] for d in published(event_sink, events.DOCUMENT_UPSERTED)) == [
        f"file://{docs}/{name}.md" for name in ("alpha", "beta", "delta")]
    deleted, = published(event_sink, events.DOCUMENT_DELETED)
    assert deleted["uri"] == f"file://{docs}/gamma.md" and deleted["collection"] == "default"
    entry = Runtime(ragfn_env).index.ledger_entry("default", f"file://{docs}/gamma.md")
    assert deleted["sequence"] > int(entry.sequence, 16)
    assert not published(event_sink, events.RESYNC_REQUESTED)  # one page was enough


def test_without_prune_nothing_is_deleted_and_tenant_and_groups_are_passed_on(docs, event_sink):
    (docs / "gamma.md").unlink()
    response = request({"uri": f"file://{docs}", "collection": "default", "tenant": "acme", "groups": ["eng"]})
    assert response.status_code == 200 and response.get_json()["deleted"] == 0
    upserts = published(event_sink, events.DOCUMENT_UPSERTED)
    assert len(upserts) == 2 and all((d["tenant"], d["groups"]) == ("acme", ["eng"]) for d in upserts)
    assert not published(event_sink, events.DOCUMENT_DELETED)


def test_a_large_prefix_goes_page_by_page(docs, event_sink):
    (docs / "gamma.md").unlink()
    for name in ("delta", "epsilon"):
        (docs / f"{name}.md").write_text(DOC.format(title=name))
    pages, data, seen = [], {"uri": f"file://{docs}/", "prune": True, "page_size": 2}, []
    while data is not None:
        before = len(event_sink.received)
        response = request(data)
        assert response.status_code == 200, response.get_data(as_text=True)
        pages.append(response.get_json())
        new = event_sink.received[before:]
        seen += [(e["type"], e.get_data()["uri"]) for e in new if e["type"] != events.RESYNC_REQUESTED]
        follow = [e.get_data() for e in new if e["type"] == events.RESYNC_REQUESTED]
        assert new[-1]["type"] == events.RESYNC_REQUESTED if follow else True  # the next page goes out last
        data = follow[0] if follow else None
    assert [p["remaining"] for p in pages] == [3, 1, 0]
    assert [p["upserted"] + p["deleted"] for p in pages] == [2, 2, 1]
    expected = [(events.DOCUMENT_UPSERTED, f"file://{docs}/{n}.md") for n in ("alpha", "beta", "delta", "epsilon")]
    assert sorted(seen) == sorted(expected + [(events.DOCUMENT_DELETED, f"file://{docs}/gamma.md")])
    assert pages[0]["next_start_after"] == f"file://{docs}/beta.md"


def test_a_redelivered_request_publishes_the_same_event_ids(docs, event_sink):
    for _ in range(2):
        assert request({"uri": f"file://{docs}/", "page_size": 2}).status_code == 200
    ids = [event["id"] for event in event_sink.received]
    assert len(ids) == 6 and ids[:3] == ids[3:]


def test_the_nightly_pingsource_event_carries_the_request(docs, event_sink):
    response = request({"uri": f"file://{docs}/", "prune": True}, events.PING,
                       source="/apis/v1/namespaces/ragfn/pingsources/ragfn-resync", ragfnjob="resync")
    assert response.status_code == 200 and response.get_json()["upserted"] == 3
    bad = request({"reason": "keep-alive"}, events.PING)
    assert bad.status_code == 400 and "PingSource's data is not a resync request" in bad.get_json()["message"]


@pytest.mark.parametrize(("data", "message"), [
    ({"uri": "file:///etc/"}, "outside the allowed file roots"),
    ({"uri": "ftp://host/x/"}, "scheme"),
    ({"prune": True}, "uri"),
    ({"uri": "s3://bucket/", "page_size": 0}, "page_size"),
])
def test_bad_requests_are_400s(ragfn_env, event_sink, data, message):
    response = request(data)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert message in response.get_json()["message"] and event_sink.received == []


def test_an_object_is_not_a_prefix(docs, event_sink):
    response = request({"uri": f"file://{docs}/alpha.md"})
    assert response.status_code == 400 and "folder or a bucket prefix" in response.get_json()["message"]


def test_an_s3_prefix_against_moto(ragfn_env, event_sink, monkeypatch):
    with moto_s3() as endpoint:
        monkeypatch.setenv("RAGFN_S3_ENDPOINT_URL", endpoint)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="docs")
        for key in ("team/a.md", "team/b.md", "team/sub/c.md", "other/d.md"):
            s3.put_object(Bucket="docs", Key=key, Body=DOC.format(title=key).encode())
        settings = ragfn_env.model_copy(update={"s3_endpoint_url": endpoint})
        ingest(["s3://docs/team/"], Runtime(settings))
        s3.delete_object(Bucket="docs", Key="team/b.md")
        response = request({"uri": "s3://docs/team/", "prune": True})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert sorted(d["uri"] for d in published(event_sink, events.DOCUMENT_UPSERTED)) == [
        "s3://docs/team/a.md", "s3://docs/team/sub/c.md"]
    assert [d["uri"] for d in published(event_sink, events.DOCUMENT_DELETED)] == ["s3://docs/team/b.md"]


def test_unchanged_s3_objects_are_not_downloaded_again(ragfn_env, event_sink, monkeypatch):
    """A nightly re-sync announces every object; chunk settles the unchanged ones with a HEAD, not a GET."""
    with moto_s3() as endpoint:
        monkeypatch.setenv("RAGFN_S3_ENDPOINT_URL", endpoint)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="docs")
        for name in ("a", "b"):
            s3.put_object(Bucket="docs", Key=f"team/{name}.md", Body=DOC.format(title=name).encode())
        runtime = Runtime(ragfn_env.model_copy(update={"s3_endpoint_url": endpoint}))
        ingest(["s3://docs/team/"], runtime)
        s3.put_object(Bucket="docs", Key="team/b.md", Body=DOC.format(title="b, edited").encode())
        assert request({"uri": "s3://docs/team/"}).status_code == 200
        downloads: list[str] = []
        runtime.reader._s3_client().meta.events.register(
            "before-parameter-build.s3.GetObject", lambda params, **_: downloads.append(params["Key"]))
        results = {}
        for upsert in published(event_sink, events.DOCUMENT_UPSERTED):
            change, = parse_storage_event(events.DOCUMENT_UPSERTED, upsert)
            results[change.uri] = chunk_change(change, runtime).summary
        assert results["s3://docs/team/a.md"]["status"] == "unchanged"
        assert results["s3://docs/team/b.md"]["status"] == "chunked"
        assert downloads == ["team/b.md"]


def test_a_delete_orders_after_a_version_indexed_under_an_s3_sequencer(docs, event_sink, ragfn_env):
    """S3 sequencers are far larger than microsecond clocks: the delete must still be newer than what it removes."""
    runtime = Runtime(ragfn_env)
    uri = f"file://{docs}/alpha.md"
    (docs / "alpha.md").write_text(DOC.format(title="alpha, edited"))
    ingest_uri(ObjectChange("upsert", uri, sequence=int("0055AED6DCD90281E5", 16)), runtime, IngestReport())
    (docs / "alpha.md").unlink()
    assert request({"uri": f"file://{docs}/", "prune": True}).status_code == 200
    delete, = [e for e in event_sink.received if e["type"] == events.DOCUMENT_DELETED]
    change, = parse_storage_event(delete["type"], delete.get_data())
    tomb = chunk_change(change, runtime).events[0].data  # what the chunk function makes of it
    removed = remove_document(tomb, runtime)  # and the index function
    assert removed.summary["stale"] is False and removed.summary["removed"] >= 1
    assert runtime.index.ledger_entry("default", uri).state == "deleted"


def test_a_change_whose_notification_was_lost_is_indexed_by_the_resync(docs, event_sink, ragfn_env):
    """Indexed under an S3 sequencer, changed without a notification: the re-sync's upsert still replaces it."""
    runtime = Runtime(ragfn_env)
    uri = f"file://{docs}/alpha.md"
    (docs / "alpha.md").write_text(DOC.format(title="alpha, second"))  # indexed from its S3 notification
    ingest_uri(ObjectChange("upsert", uri, sequence=int("0055AED6DCD90281E5", 16)), runtime, IngestReport())
    before = runtime.index.ledger_entry("default", uri)
    assert before.sequence == events.sequence_key(int("0055AED6DCD90281E5", 16))
    (docs / "alpha.md").write_text(DOC.format(title="alpha, third"))  # its notification never arrives
    assert request({"uri": f"file://{docs}/"}).status_code == 200
    upsert, = [e for e in event_sink.received if e["type"] == events.DOCUMENT_UPSERTED and e.get_data()["uri"] == uri]
    change, = parse_storage_event(upsert["type"], upsert.get_data())
    report = IngestReport()
    ingest_uri(change, runtime, report)  # chunk, embed and index, as the functions would
    after = runtime.index.ledger_entry("default", uri)
    assert report.outcomes[uri] == "indexed" and after.version != before.version
    assert after.sequence > before.sequence
    # and a late copy of the old notification cannot bring the old text back
    ingest_uri(ObjectChange("upsert", uri, version=before.version, sequence=int("0055AED6DCD90281E5", 16)), runtime,
               stale := IngestReport())
    assert runtime.index.ledger_entry("default", uri).version == after.version, stale.outcomes


def test_end_to_end_through_the_local_broker(ragfn_env, docs, monkeypatch):
    """resync -> chunk -> embed -> index, routed by eventing/triggers: the index follows the folder."""
    broker = LocalBroker([t for t in load_triggers(REPO / "eventing" / "triggers") if t.name in (
        "ragfn-resync", "ragfn-chunk", "ragfn-embed", "ragfn-index")], {}, DeadLetterStore(ragfn_env.dead_letter_path))
    front = broker.serve("127.0.0.1", 0)
    threading.Thread(target=front.serve_forever, daemon=True).start()
    monkeypatch.setenv("K_SINK", f"http://127.0.0.1:{front.server_port}/")
    functions = {f"ragfn-{name}": Served(create_app(target="handle", signature_type="http",
                                                    source=str(REPO / "functions" / name / "main.py")))
                 for name in ("resync", "chunk", "embed", "index")}
    broker.subscribers.update({name: served.url for name, served in functions.items()})
    try:
        (docs / "gamma.md").unlink()
        (docs / "delta.md").write_text(DOC.format(title="delta"))
        ping = CloudEvent({"type": events.PING, "source": "/apis/v1/namespaces/ragfn/pingsources/ragfn-resync",
                           "ragfnjob": "resync"}, {"uri": f"file://{docs}/", "prune": True, "page_size": 2})
        assert broker.accept(ping) == 1
        assert broker.wait_idle(120), broker.status()
        assert broker.dead_letters.list() == []
        ledger = {e.document_id: e.state for e in Runtime(ragfn_env).index.ledger("default")}
        assert ledger == {f"file://{docs}/{n}.md": "indexed" for n in ("alpha", "beta", "delta")} | {
            f"file://{docs}/gamma.md": "deleted"}
    finally:
        for served in functions.values():
            served.server.shutdown()
        front.shutdown()
