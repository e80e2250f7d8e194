"""The ask gateway in cluster shape: retrieve, cache-check and ask as separate functions-framework servers.

One module-scoped set of real servers (a `chroma run` server, Redis, the predictor stand-in from
tests/chat_server.py) and one JSONL trace file they all append to; the tests read the trace back to check that one
question is one trace.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis
from chat_server import API_KEY, ChatServer
from conftest import REPO, ServiceSigner, free_port, wait_http, write_service_keys
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from ragfn.core.config import OFFLINE_MODEL, Settings
from ragfn.core.errors import Unavailable
from ragfn.core.service_auth import ServiceKeys
from ragfn.core.telemetry import traced_http_client
from ragfn.gateway.ask import NO_RETRIEVAL
from ragfn.gateway.backends import AnswerKey, RetrievalQuery
from ragfn.gateway.breaker import CircuitOpen
from ragfn.gateway.remote import HttpAnswerCache, HttpRetrieval
from ragfn.ingest.walk import ingest
from ragfn.retrieval.dense import Caller
from ragfn.serve.runtime import Runtime

pytestmark = pytest.mark.integration
RUN = uuid.uuid4().hex[:8]  # Redis and Chroma are shared with other tests (and other sessions): names of our own
TENANT, COLLECTION, KEY = f"acme-{RUN}", f"gw{RUN}", "key-cluster"
REDIS_URL = "redis://127.0.0.1:6379/12"
DOCS = {"lists.md": "# Lists\n\nTo sort a list in place, call list.sort(). The sorted() built-in returns a new list.\n",
        "files.md": "# Files\n\nOpen a file with open(path) and read it with read(). Close it with close().\n"}


class Service:
    """One function as Knative runs it (functions-framework; the ask gateway, its own Flask app), restartable."""

    def __init__(self, name: str, folder: str, env: dict[str, str], log_dir: Path) -> None:
        self.name, self.env, self.log_dir = name, env, log_dir
        self.server = ["-m", "ragfn.serve.gateway_app"] if folder == "ask" else [
            "-m", "functions_framework", "--target", "handle", "--source", str(REPO / "functions" / folder / "main.py")]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        log = (self.log_dir / f"{self.name}.log").open("ab")
        # a session of its own, so stop() reaches gunicorn's workers too: one left holding the port after its master
        # was killed made the restart fail to bind (seen once in CI on a loaded machine)
        self.process = subprocess.Popen(
            [sys.executable, *self.server, "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self) -> None:
        wait_http(self.url, timeout=60, process=self.process)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # gunicorn's quick shutdown; SIGTERM waits for idle keep-alives
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
                self.process.wait(timeout=5)


class TracedChat(ChatServer):
    """The predictor stand-in, remembering the traceparent of each request it gets."""

    def __init__(self) -> None:
        self.traceparents: list[str] = []
        super().__init__()

    def app(self, environ, start_response):  # type: ignore[override]
        self.traceparents.append(environ.get("HTTP_TRACEPARENT", ""))
        return super().app(environ, start_response)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, model_dir, chroma_server):
    root = tmp_path_factory.mktemp("cluster")
    (root / "docs").mkdir()
    for name, text in DOCS.items():
        (root / "docs" / name).write_text(text)
    settings = Settings(home=root / "ingest", embed_model=OFFLINE_MODEL, embed_model_path=model_dir,
                        file_roots=[root / "docs"], chunk_tokens=120, chunk_overlap_tokens=16, chroma_url=chroma_server)
    ingest([str(root / "docs")], Runtime(settings), collection=COLLECTION, tenant=TENANT)
    keys = root / "keys.json"
    keys.write_text(json.dumps({hashlib.sha256(KEY.encode()).hexdigest(): {"tenant": TENANT, "groups": ["eng"],
                                                                          "name": "cluster-test"}}))
    chat = TracedChat()
    chat.thread.start()
    prefix = f"rc-{RUN}"
    service_keys = write_service_keys(root / "service-keys")  # the gateway signs, retrieve and cache-check verify
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAGFN_", "OTEL_")) and k != "K_SINK"}
    base |= {"PYTHONPATH": str(REPO), "RAGFN_TRACE_FILE": str(root / "traces.jsonl"), "THREADS": "4",
             "RAGFN_EMBED_MODEL": OFFLINE_MODEL, "RAGFN_EMBED_MODEL_PATH": str(model_dir),
             "RAGFN_SERVICE_KEYS_FILE": str(service_keys)}
    retrieve = Service("retrieve", "retrieve", base | {"RAGFN_HOME": str(root / "retrieve"),
                                                       "RAGFN_CHROMA_URL": chroma_server}, root)
    cache = Service("cache-check", "cache_check", base | {"RAGFN_HOME": str(root / "cache"),
                                                          "RAGFN_REDIS_URL": REDIS_URL, "RAGFN_CACHE_PREFIX": prefix},
                    root)
    # generous timeouts: two cores run four servers and the suite here; the defaults are 10 s and 2 s
    ask = Service("ask", "ask", base | {
        "RAGFN_HOME": str(root / "ask"), "RAGFN_API_KEYS_FILE": str(keys), "RAGFN_RETRIEVE_URL": retrieve.url,
        "RAGFN_CACHE_URL": cache.url, "RAGFN_RETRIEVE_TIMEOUT_SECONDS": "30", "RAGFN_CACHE_TIMEOUT_SECONDS": "20",
        "RAGFN_LLM_URL": chat.base_url, "RAGFN_LLM_SERVED_NAME": "extractive", "RAGFN_LLM_API_KEY": API_KEY}, root)
    services = {"retrieve": retrieve, "cache": cache, "ask": ask}
    try:
        for service in services.values():
            service.start()
        for service in services.values():
            service.wait()
        yield {"root": root, "services": services, "chat": chat, "ask": f"{ask.url}/v1/ask",
               "signer": ServiceSigner(ServiceKeys(service_keys))}
    finally:
        for service in services.values():
            service.stop()
        chat.server.shutdown()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)


def warm(service: Service, signer: ServiceSigner) -> None:
    """The first real request loads the model; make it before the gateway's (shorter) timeouts apply."""
    body = ({"question": "warm up"} if service.name == "retrieve" else
            {"op": "lookup", "question": "warm up", "model": "warm", "prompt_version": "v0"})
    response = httpx.post(service.url, json=body, timeout=120, headers=signer.headers(service.name, TENANT))
    assert response.status_code == 200, response.text


@pytest.fixture
def stack(cluster):
    """The cluster with every service up: a test that stopped one leaves it to the next test to restart."""
    for service in cluster["services"].values():
        if not service.running:
            service.start()
            service.wait()
    for name in ("retrieve", "cache"):
        warm(cluster["services"][name], cluster["signer"])
    return cluster


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


def ask(stack, question: str, *, stream: bool = False, header: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"} | ({"traceparent": header} if header else {})
    return httpx.post(stack["ask"], json={"question": question, "collection": COLLECTION, "stream": stream},
                      headers=headers, timeout=60)


def sse_events(response: httpx.Response) -> list[tuple[str, object]]:
    events = []
    for block in response.text.strip().split("\n\n"):
        name, data = block.split("\n", 1)
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


def trace_spans(stack, trace_id: str, expected: dict[str, int], timeout: float = 15.0) -> list[dict]:
    """The trace's spans once `expected` (name -> how many) have all been written; the ask span ends last."""
    path, deadline = stack["root"] / "traces.jsonl", time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        spans = [s for s in map(json.loads, lines) if s["trace_id"] == trace_id]
        names = [s["name"] for s in spans]
        if all(names.count(name) >= count for name, count in expected.items()):
            return spans
        if time.monotonic() > deadline:
            raise AssertionError(f"trace {trace_id} has {names}, expected {expected}")
        time.sleep(0.1)


def one(spans: list[dict], name: str, **attributes: object) -> dict:
    found = [s for s in spans if s["name"] == name and all(s["attributes"].get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, (name, attributes, [(s["name"], s["attributes"]) for s in spans])
    return found[0]


def assert_connected(spans: list[dict], parent_id: str | None) -> dict:
    """One tree: a single `ragfn.ask` under the caller's span, every other span's parent inside the trace."""
    root = one(spans, "ragfn.ask")
    assert root["parent_id"] == parent_id and root["service"] == "ragfn-ask" and root["kind"] == "SERVER"
    ids = {s["span_id"] for s in spans}
    assert all(s["parent_id"] in ids for s in spans if s is not root), "a span's parent is outside the trace"
    assert all(s["end_ns"] <= root["end_ns"] for s in spans), "a span outlived the ask span"
    return root


def by_id(spans: list[dict], span_id: str) -> dict:
    [span] = [s for s in spans if s["span_id"] == span_id]
    return span


def called_from(spans: list[dict], remote: dict, stage: dict) -> None:
    """`remote` was reached through one HTTP CLIENT span (opentelemetry-instrumentation-httpx) inside `stage`."""
    http = by_id(spans, remote["parent_id"])
    assert http["kind"] == "CLIENT" and http["name"] == "POST" and http["parent_id"] == stage["span_id"], http


def test_remote_cache_miss_then_hit_in_one_trace_per_question(stack):
    header, trace_id, caller_span = traceparent()
    first = ask(stack, "How do I sort a list?", header=header)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["cache"] == "miss" and body["degraded"] is None and "[1]" in body["answer"]
    assert body["citations"][0]["source"].endswith("docs/lists.md")
    assert {"cache", "retrieve", "generate", "cache_store"} <= set(body["timings_ms"])

    spans = trace_spans(stack, trace_id, {"ragfn.ask": 1, "ragfn.cache-check": 2, "ragfn.retrieve": 1})
    root = assert_connected(spans, caller_span)
    lookup, store = one(spans, "ragfn.ask.cache_lookup"), one(spans, "ragfn.ask.cache_store")
    remote_lookup = one(spans, "ragfn.cache-check", **{"rag.cache.op": "lookup"})
    remote_store = one(spans, "ragfn.cache-check", **{"rag.cache.op": "store"})
    retrieve, remote_retrieve = one(spans, "ragfn.ask.retrieve"), one(spans, "ragfn.retrieve")
    llm = one(spans, "ragfn.ask.llm")
    assert lookup["parent_id"] == retrieve["parent_id"] == llm["parent_id"] == store["parent_id"] == root["span_id"]
    called_from(spans, remote_lookup, lookup)
    called_from(spans, remote_store, store)
    called_from(spans, remote_retrieve, retrieve)
    assert remote_lookup["service"] == "ragfn-cache-check" and remote_store["attributes"]["rag.cache.stored"] is True
    assert remote_retrieve["service"] == "ragfn-retrieve"
    assert {lookup["kind"], retrieve["kind"], llm["kind"], store["kind"]} == {"INTERNAL"}
    [to_predictor] = [s for s in spans if s["parent_id"] == llm["span_id"] and s["kind"] == "CLIENT"]
    assert f"00-{trace_id}-{to_predictor['span_id']}-01" in stack["chat"].traceparents  # the predictor joins too
    attributes = root["attributes"]
    assert attributes["rag.cache"] == "miss" and attributes["rag.degraded"] is False
    assert attributes["rag.retrieval.count"] >= 1 and attributes["rag.citations"] >= 1
    scores = attributes["rag.retrieval.top_scores"]
    assert 1 <= len(scores) <= 5 and scores == sorted(scores, reverse=True)
    assert remote_retrieve["attributes"]["rag.retrieval.count"] == attributes["rag.retrieval.count"]
    assert {f"rag.timing.{stage}_ms" for stage in ("cache", "retrieve", "generate", "cache_store")} <= set(attributes)

    header, trace_id, caller_span = traceparent()
    second = ask(stack, "how do I sort a list", header=header).json()
    assert second["cache"] == "hit" and second["answer"] == body["answer"] and second["citations"] == body["citations"]
    spans = trace_spans(stack, trace_id, {"ragfn.ask": 1, "ragfn.cache-check": 1})
    root = assert_connected(spans, caller_span)
    assert one(spans, "ragfn.cache-check")["attributes"]["rag.cache"] == "hit"
    assert not {"ragfn.retrieve", "ragfn.ask.llm"} & {s["name"] for s in spans}
    assert root["attributes"]["rag.cache"] == "hit" and root["attributes"]["rag.cache.tier"] == "exact"
    assert root["attributes"]["rag.retrieval.count"] == 0
    assert not (stack["root"] / "ask" / "chroma").exists(), "the gateway opened an index of its own"


def test_a_streamed_answer_keeps_its_span_open_until_the_last_event(stack):
    header, trace_id, caller_span = traceparent()
    response = ask(stack, "What does sorted() return?", stream=True, header=header)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    names = [name for name, _ in events]
    assert names[0] == "token" and names[-2:] == ["citations", "final"]
    assert "[1]" in "".join(data for name, data in events if name == "token")
    assert events[-1][1]["cache"] == "miss" and events[-1][1]["degraded"] is None

    spans = trace_spans(stack, trace_id, {"ragfn.ask": 1, "ragfn.cache-check": 2, "ragfn.retrieve": 1})
    root = assert_connected(spans, caller_span)
    llm, store = one(spans, "ragfn.ask.llm"), one(spans, "ragfn.ask.cache_store")
    assert llm["parent_id"] == root["span_id"] and store["start_ns"] >= llm["end_ns"]  # tokens all came first
    [to_predictor] = [s for s in spans if s["parent_id"] == llm["span_id"] and s["kind"] == "CLIENT"]
    assert f"00-{trace_id}-{to_predictor['span_id']}-01" in stack["chat"].traceparents
    called_from(spans, one(spans, "ragfn.retrieve"), one(spans, "ragfn.ask.retrieve"))
    attributes = root["attributes"]
    assert attributes["rag.stream"] is True and attributes["rag.cache"] == "miss"
    assert attributes["rag.retrieval.count"] >= 1 and attributes["rag.retrieval.top_scores"]
    assert attributes["rag.degraded"] is False and "rag.timing.generate_ms" in attributes

    header, trace_id, caller_span = traceparent()
    again = sse_events(ask(stack, "What does sorted() return?", stream=True, header=header))
    assert again[-1][1]["cache"] == "hit"
    spans = trace_spans(stack, trace_id, {"ragfn.ask": 1, "ragfn.cache-check": 1})
    assert assert_connected(spans, caller_span)["attributes"]["rag.cache"] == "hit"


def test_cache_service_down_answers_without_the_cache(stack):
    stack["services"]["cache"].stop()
    header, trace_id, caller_span = traceparent()
    body = ask(stack, "How do I open a file?", header=header).json()
    assert body["cache"] == "off" and body["degraded"] == "cache-unavailable"
    assert "[1]" in body["answer"] and body["citations"][0]["source"].endswith("docs/files.md")
    spans = trace_spans(stack, trace_id, {"ragfn.ask": 1, "ragfn.retrieve": 1})
    root = assert_connected(spans, caller_span)
    assert one(spans, "ragfn.ask.cache_lookup")["status"] == "ERROR"
    assert "ragfn.ask.cache_store" not in {s["name"] for s in spans}  # nothing to store into
    assert root["attributes"]["rag.cache"] == "off" and root["attributes"]["rag.degraded"] is True
    assert root["attributes"]["rag.fallback.reason"] == "cache-unavailable"
    name, final = sse_events(ask(stack, "How do I open a file?", stream=True))[-1]
    assert name == "final" and final["cache"] == "off" and final["degraded"] == "cache-unavailable"


def test_retrieve_service_down_still_answers_marked_degraded(stack):
    stack["services"]["retrieve"].stop()
    header, trace_id, caller_span = traceparent()
    body = ask(stack, "How do I close a file?", header=header).json()
    assert body["degraded"] == "retrieve-unavailable" and body["cache"] == "miss"
    assert body["answer"] == NO_RETRIEVAL and body["citations"] == []
    spans = trace_spans(stack, trace_id, {"ragfn.ask": 1, "ragfn.cache-check": 1})
    root = assert_connected(spans, caller_span)
    assert one(spans, "ragfn.ask.retrieve")["status"] == "ERROR"
    assert not {"ragfn.ask.llm", "ragfn.ask.cache_store"} & {s["name"] for s in spans}  # no passages, no LLM call
    assert root["attributes"]["rag.fallback.reason"] == "retrieve-unavailable"
    assert root["attributes"]["rag.retrieval.count"] == 0
    events = sse_events(ask(stack, "How do I close a file?", stream=True))
    assert events[0] == ("status", {"degraded": "retrieve-unavailable", "message": "document search is unavailable"})
    assert events[-1][1]["degraded"] == "retrieve-unavailable"


# -- the HTTP stages on their own: timeouts and breakers, against real sockets ---------------------------------


class SlowServer:
    """Answers every POST after `delay` seconds: a cold or overloaded function."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @Request.application
    def app(self, request: Request) -> Response:
        time.sleep(self.delay)
        return Response(json.dumps({"cache": "miss"}), mimetype="application/json")


def test_remote_calls_time_out_and_open_the_breaker(tmp_path):
    http, keys = traced_http_client(), ServiceKeys(write_service_keys(tmp_path / "service-keys"))
    slow = SlowServer(delay=2.0)
    key = AnswerKey(Caller("acme", ("eng",)), "default", "m", "v1")
    try:
        cache = HttpAnswerCache(slow.url, http, keys, timeout_seconds=0.3)
        started = time.monotonic()
        with pytest.raises(Unavailable, match="timed out"):
            cache.lookup("q", key)
        assert time.monotonic() - started < 1.5
        retrieval = HttpRetrieval(f"http://127.0.0.1:{free_port()}", http, keys, timeout_seconds=1.0)  # nothing listens
        for _ in range(3):
            with pytest.raises(Unavailable, match="cannot reach retrieve"):
                retrieval.retrieve(RetrievalQuery("q", Caller("acme")))
        with pytest.raises(CircuitOpen):  # the fourth call does not even try
            retrieval.retrieve(RetrievalQuery("q", Caller("acme")))
        assert retrieval.breaker.state == "open"
    finally:
        slow.server.shutdown()
        http.close()
