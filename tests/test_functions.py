"""The embed and index functions in-process through functions-framework's test client."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent, from_http
from functions_framework import create_app

from ragfn.eventing import events
from ragfn.store.vectors import decode_vector

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent


def client(name: str):
    return create_app(target="handle", source=str(REPO / "functions" / name / "main.py"),
                      signature_type="http").test_client()


def chunk_batch(texts: list[str], version: str = "v1", sequence: int = 1) -> events.ChunkBatch:
    doc = events.DocumentVersion(document_id="file:///docs/a.md", version=version,
                                 sequence=events.sequence_key(sequence), tenant="acme", groups=["eng"])
    chunks = [events.Chunk(number=i, text=t, start=0, end=len(t), tokens=3,
                           content_hash=hashlib.sha256(t.encode()).hexdigest()) for i, t in enumerate(texts)]
    return events.ChunkBatch(document=doc, batch=0, batches=1, total_chunks=len(chunks), chunks=chunks)


def post(app_client, event_type: str, data, *, structured: bool = False, **attributes):
    event = CloudEvent({"type": event_type, "source": "test", **attributes},
                       data.model_dump(mode="json") if hasattr(data, "model_dump") else data)
    headers, body = (to_structured if structured else to_binary)(event)
    return app_client.post("/", headers=headers, data=body)


def reply_event(response) -> CloudEvent:
    assert response.status_code == 200, response.get_data(as_text=True)
    return from_http(dict(response.headers), response.get_data())


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
def test_embed_replies_with_vectors(ragfn_env, structured):
    texts = ["Generators yield values lazily.", "Lists hold values in memory."]
    reply = reply_event(post(client("embed"), events.CHUNKS, chunk_batch(texts), structured=structured))
    assert reply["type"] == events.EMBEDDED
    embedded = events.EmbeddedBatch.model_validate(reply.get_data())
    assert embedded.dimensions == 384 and embedded.reused == 0
    vectors = [decode_vector(v, 384) for v in embedded.vectors]
    assert all(abs(np.linalg.norm(v) - 1) < 1e-3 for v in vectors)
    assert float(vectors[0] @ vectors[1]) < 0.95  # different texts, different vectors


def test_embed_then_index_then_tombstone(ragfn_env):
    batch = chunk_batch(["Python has generators.", "Python has decorators."])
    embedded = reply_event(post(client("embed"), events.CHUNKS, batch))
    indexed = reply_event(post(client("index"), events.EMBEDDED, embedded.get_data()))
    assert indexed["type"] == events.DOCUMENT_INDEXED
    assert indexed.get_data()["chunks"] == 2
    # re-embedding the same texts reuses the stored vectors
    again = events.EmbeddedBatch.model_validate(reply_event(post(client("embed"), events.CHUNKS, batch)).get_data())
    assert again.reused == 2 and again.vectors == events.EmbeddedBatch.model_validate(embedded.get_data()).vectors
    tomb = events.DocumentTombstoned(document_id="file:///docs/a.md", sequence=events.sequence_key(2))
    removed = reply_event(post(client("index"), events.DOCUMENT_TOMBSTONED, tomb))
    assert removed["type"] == events.DOCUMENT_REMOVED and removed.get_data()["chunks_removed"] == 2


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = json.loads(response.get_data())
    assert body["message"] and body["retryable"] is (status != 400)
    return body


def test_bad_requests_get_clear_400s(ragfn_env):
    embed = client("embed")
    # malformed JSON in structured mode
    body = _error(embed.post("/", data=b'{"specversion": "1.0", "type": ',
                             headers={"content-type": "application/cloudevents+json"}), 400)
    assert "malformed" in body["message"].lower()
    # binary mode without the required ce-id / ce-source attributes
    body = _error(embed.post("/", data=b"{}", headers={"ce-specversion": "1.0", "ce-type": events.CHUNKS,
                                                         "content-type": "application/json"}), 400)
    assert "malformed" in body["message"].lower()
    # an unknown type names what is accepted
    body = _error(post(embed, "com.example.nope", {"x": 1}), 400)
    assert events.CHUNKS in body["hint"]
    # the right type with the wrong data names the field
    body = _error(post(embed, events.CHUNKS, {"document": {"document_id": 3}, "batch": 0}), 400)
    assert "document" in body["message"] and "chunks" in body["message"]
    # a plain JSON POST without an envelope
    _error(embed.post("/", json={"hello": "world"}), 400)
    # bytes that are not JSON under a JSON content type
    _error(embed.post("/", data=b"\xff\xfe\x00binary", headers={
        "ce-specversion": "1.0", "ce-type": events.CHUNKS, "ce-id": "1", "ce-source": "t",
        "content-type": "application/json"}), 400)
    # after all that the function still serves good events
    reply_event(post(embed, events.CHUNKS, chunk_batch(["still alive"])))


def test_index_rejects_bad_vectors_without_writing(ragfn_env):
    embedded = reply_event(post(client("embed"), events.CHUNKS, chunk_batch(["one", "two"]))).get_data()
    embedded["vectors"][1] = "AAAA"
    body = _error(post(client("index"), events.EMBEDDED, embedded), 400)
    assert "float32 values" in body["message"]
    from ragfn.store.chroma import ChromaIndex

    assert ChromaIndex(ragfn_env).stats().get("default", {"chunks": 0})["chunks"] == 0


def test_missing_model_folder_is_a_retryable_config_error(ragfn_env, monkeypatch, tmp_path):
    monkeypatch.setenv("RAGFN_EMBED_MODEL_PATH", str(tmp_path / "nowhere"))
    body = _error(post(client("embed"), events.CHUNKS, chunk_batch(["x"])), 500)
    assert "RAGFN_EMBED_MODEL_PATH" in body["message"] and "fetch_models" in body["hint"]


def test_a_vector_store_gone_mid_run_is_a_retryable_503_not_an_internal_error(ragfn_env, monkeypatch, tmp_path):
    """Chroma stopped after the function connected (bench/ingest_faults.py found these as 500s with tracebacks)."""
    import sys

    from conftest import free_port, served

    port = free_port()
    monkeypatch.setenv("RAGFN_CHROMA_URL", f"http://127.0.0.1:{port}")
    embed = client("embed")
    chroma = [str(Path(sys.executable).with_name("chroma")), "run", "--path", str(tmp_path / "chroma"), "--host",
              "127.0.0.1", "--port", str(port)]
    with served(chroma, tmp_path / "chroma.log", f"http://127.0.0.1:{port}/api/v2/heartbeat"):
        assert post(embed, events.CHUNKS, chunk_batch(["Generators yield values lazily."])).status_code == 200
    response = post(embed, events.CHUNKS, chunk_batch(["Lists hold values in memory."]))
    assert response.status_code == 503, response.get_data(as_text=True)
    body = response.get_json()
    assert body["retryable"] is True and "out of reach" in body["message"]
    assert "reference" not in body["message"]  # not the catch-all of unexpected failures


def test_get_is_a_readiness_probe(ragfn_env):
    assert client("index").get("/").get_json() == {"function": "index", "ready": True}


class Body(io.RawIOBase):
    """A request body that never ends, or that fails if read at all; what a function reads of it is counted."""

    def __init__(self, *, readable: bool = True) -> None:
        self.allowed, self.read_bytes = readable, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self.allowed:
            raise AssertionError("the body was read")
        buffer[:] = b" " * len(buffer)
        self.read_bytes += len(buffer)
        return len(buffer)


def send(app, headers: dict, body: Body, content_length: int | None) -> tuple[int, dict]:
    """The function's WSGI app called as a server calls it, with `body` as wsgi.input: declared by a Content-Length,
    or chunked (no length; the server marks the input terminated)."""
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(method="POST", path="/", headers=headers).get_environ()
    environ["wsgi.input"] = io.BufferedReader(body)
    if content_length is None:
        environ.pop("CONTENT_LENGTH", None)
        environ["wsgi.input_terminated"] = True
    else:
        environ["CONTENT_LENGTH"] = str(content_length)
    answer = []
    chunks = app.application(environ, lambda status, headers, exc_info=None: answer.append((status, dict(headers))))
    return int(answer[0][0].split()[0]), json.loads(b"".join(chunks))


# Security: the functions read the whole body before checking its size, so one request could make a pod buffer
# any amount (or wait forever on a body with no end).
@pytest.mark.parametrize("name, limit", [("chunk", 16 * 2**20), ("dead_letter", 16 * 2**20), ("retrieve", 256 * 2**10)])
def test_a_body_over_the_limit_is_refused_before_it_is_read(ragfn_env, service_keys, name, limit):
    app = client(name)
    headers = {"ce-specversion": "1.0", "ce-type": events.DOCUMENT_UPSERTED, "ce-id": "1", "ce-source": "t",
               "content-type": "application/json", **service_keys.headers("retrieve", "acme")}
    status, body = send(app, headers, Body(readable=False), limit + 1)
    assert status == 400 and "over the limit" in body["message"], body
    endless = Body()
    status, body = send(app, headers, endless, None)
    assert status == 400 and "over the limit" in body["message"], body
    assert endless.read_bytes <= limit + 2**16


# Security (found by a review of the change above): functions-framework reads the whole request into memory before
# any answer that is not streamed, so a request without a token, or a readiness probe, with an endless body made
# the pod hold all of it.
@pytest.mark.parametrize("name, method", [("retrieve", "POST"), ("retrieve", "GET"), ("chunk", "GET"),
                                          ("dead_letter", "GET")])
def test_no_answer_reads_a_body_the_function_did_not(ragfn_env, service_keys, name, method):
    from werkzeug.test import EnvironBuilder

    app, endless = client(name), Body()
    environ = EnvironBuilder(method=method, path="/", headers={"content-type": "application/json"}).get_environ()
    environ |= {"wsgi.input": io.BufferedReader(endless), "wsgi.input_terminated": True}
    environ.pop("CONTENT_LENGTH", None)
    answer = []
    chunks = app.application(environ, lambda status, headers, exc_info=None: answer.append(status))
    b"".join(chunks)
    assert answer[0].split()[0] in ("200", "401") and endless.read_bytes == 0, (answer, endless.read_bytes)


@pytest.mark.unit
def test_json_nested_too_deeply_is_a_400_not_a_retry():
    from ragfn.core.errors import BadEvent
    from ragfn.serve.handler import decode_json

    with pytest.raises(BadEvent, match="nested too deeply"):
        decode_json("[" * 100_000 + "]" * 100_000)
