"""The cache-check function (lookup, store) and its invalidate target, in-process, against the real Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from functions_framework import create_app

from ragfn.eventing import events

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/13"  # a database of its own, emptied around each test
ANSWER = {"answer": "Call list.sort() [1].", "citations": [{"source": "file:///faq.md", "chunk_id": "c1"}]}
BASE = {"model": "smollm2", "prompt_version": "p1"}


class Signed:
    """The cache-check app's test client, each request signed as the gateway signs it (acme in eng unless told)."""

    def __init__(self, client, keys) -> None:
        self.client, self.keys = client, keys

    def post(self, path: str, *, json: dict, tenant: str | None = "acme", groups=("eng",)):
        return self.client.post(path, json=json, headers=self.keys.headers("cache-check", tenant, groups))


@pytest.fixture
def clients(ragfn_env, monkeypatch, service_keys):
    monkeypatch.setenv("RAGFN_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("RAGFN_CACHE_THRESHOLD", "0.85")
    server = redis.Redis.from_url(REDIS_URL)
    server.flushdb()
    source = str(REPO / "functions" / "cache_check" / "main.py")
    yield (Signed(create_app(target="handle", source=source, signature_type="http").test_client(), service_keys),
           create_app(target="invalidate", source=source, signature_type="http").test_client())
    server.flushdb()


def test_store_then_hit_then_evict_on_reindex(clients):
    cache, invalidate = clients
    assert cache.post("/", json={"op": "lookup", "question": "How do I sort a list?", **BASE}).get_json() == {
        "cache": "miss"}
    stored = cache.post("/", json={"op": "store", "question": "How do I sort a list?", "answer": ANSWER,
                                   "cited": ["file:///faq.md"], **BASE})
    assert stored.get_json() == {"cache": "on", "stored": True}
    exact = cache.post("/", json={"op": "lookup", "question": "how do i sort a list", **BASE}).get_json()
    assert exact["cache"] == "hit" and exact["tier"] == "exact" and exact["answer"] == ANSWER
    paraphrase = cache.post("/", json={"op": "lookup", "question": "How can I sort a list?", **BASE}).get_json()
    assert paraphrase["cache"] == "hit" and paraphrase["tier"] == "semantic"
    other_tenant = cache.post("/", json={"op": "lookup", "question": "How do I sort a list?", **BASE},
                              tenant="globex").get_json()
    assert other_tenant == {"cache": "miss"}

    indexed = events.DocumentIndexed(collection="default", document_id="file:///faq.md", version="v2",
                                     sequence=events.sequence_key(2), chunks=3)
    headers, body = to_binary(CloudEvent({"type": events.DOCUMENT_INDEXED, "source": "ragfn"},
                                         indexed.model_dump(mode="json")))
    evicted = invalidate.post("/", headers=dict(headers), data=body)
    assert evicted.status_code == 200 and evicted.get_json() == {"evicted": 1}
    assert cache.post("/", json={"op": "lookup", "question": "How do I sort a list?", **BASE}).get_json() == {
        "cache": "miss"}


def test_degraded_answers_are_not_stored(clients):
    cache, _ = clients
    response = cache.post("/", json={"op": "store", "question": "Q?", "answer": ANSWER | {"degraded": "cold-start"},
                                     **BASE})
    assert response.get_json() == {"cache": "on", "stored": False}


@pytest.mark.parametrize("body, field", [
    ({"op": "lookup", "question": "", **BASE}, "question"),
    ({"op": "peek", "question": "q", **BASE}, "op"),
    ({"op": "lookup", "question": "q"}, "model"),
    ({"op": "lookup", "question": ["not", "text"], **BASE}, "question"),
])
def test_bad_requests(clients, body, field):
    cache, _ = clients
    response = cache.post("/", json=body)
    assert response.status_code == 400 and field in response.get_json()["message"]


def test_store_without_answer_and_unknown_events_are_400(clients):
    cache, invalidate = clients
    assert cache.post("/", json={"op": "store", "question": "q", **BASE}).status_code == 400
    headers, body = to_binary(CloudEvent({"type": events.CHUNKS, "source": "x"}, {}))
    assert invalidate.post("/", headers=dict(headers), data=body).status_code == 400


def test_redis_down_is_a_retryable_503(ragfn_env, monkeypatch, service_keys):
    monkeypatch.setenv("RAGFN_REDIS_URL", "redis://127.0.0.1:1/0")
    source = str(REPO / "functions" / "cache_check" / "main.py")
    cache = Signed(create_app(target="handle", source=source, signature_type="http").test_client(), service_keys)
    response = cache.post("/", json={"op": "lookup", "question": "q", **BASE})
    assert response.status_code == 503 and response.get_json()["retryable"] is True


# Security: cache-check took tenant and groups from the body, so any pod that could reach it read (and poisoned)
# any tenant's cached answers.
def test_the_caller_comes_from_the_gateways_token_never_from_the_body(clients):
    cache, _ = clients
    question = {"question": "How do I sort a list?", **BASE}
    assert cache.post("/", json={"op": "store", "answer": ANSWER, "cited": [], **question}).get_json()["stored"]
    assert cache.post("/", json={"op": "lookup", **question}).get_json()["cache"] == "hit"
    unsigned = cache.client.post("/", json={"op": "lookup", "tenant": "acme", "groups": ["eng"], **question})
    assert unsigned.status_code == 401 and "service token" in unsigned.get_json()["message"]
    poison = cache.client.post("/", json={"op": "store", "tenant": "acme", "groups": ["eng"], "answer": ANSWER,
                                          "cited": [], **question | {"question": "What is the refund policy?"}})
    assert poison.status_code == 401
    wrong = cache.client.post("/", json={"op": "lookup", **question},
                              headers=cache.keys.headers("retrieve", "acme", ["eng"]))
    assert wrong.status_code == 401
    named = cache.post("/", json={"op": "lookup", "tenant": "acme", **question}, tenant="globex")
    assert named.status_code == 400 and "tenant" in named.get_json()["message"]
