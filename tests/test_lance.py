"""LanceDB's own faults, against moto's S3 server: settings that cannot work stop a function before it turns ready,
and a bucket that goes away mid-request gives retryable errors, after which redelivery leaves the index exact.
(Its delivery semantics and isolation are the store conformance suite's: tests/test_store.py.)"""

from __future__ import annotations

from urllib.parse import urlparse

import numpy as np
import pytest
from fault_proxy import FaultProxy
from test_functions import client, post
from test_store import URI, make_batches, stored

from ragfn.core.config import load_settings
from ragfn.core.errors import ConfigError, Unavailable
from ragfn.eventing import events
from ragfn.retrieval.dense import Caller
from ragfn.serve.runtime import Runtime

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(moto_bucket) -> str:
    return moto_bucket


@pytest.fixture
def proxy(moto_server):
    url = urlparse(moto_server)
    fault = FaultProxy(url.hostname, url.port)
    yield fault
    fault.close()


def lance_env(monkeypatch, uri: str, endpoint: str) -> None:
    monkeypatch.setenv("RAGFN_STORE", "lancedb")
    monkeypatch.setenv("RAGFN_LANCEDB_URI", uri)
    monkeypatch.setenv("RAGFN_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("RAGFN_LANCEDB_REFRESH_SECONDS", "0")


def test_an_unknown_store_is_refused_naming_the_setting(monkeypatch):
    monkeypatch.setenv("RAGFN_STORE", "mongo")
    with pytest.raises(ConfigError, match=r"RAGFN_STORE='mongo' is not a store ragfn has: use chroma .* or lancedb"):
        load_settings()
    with pytest.raises(ConfigError, match="RAGFN_LANCEDB_URI='ftp://x/y'"):
        load_settings(lancedb_uri="ftp://x/y")


@pytest.mark.parametrize("function", ["index", "retrieve"])
def test_an_unreachable_bucket_keeps_a_function_from_turning_ready(ragfn_env, service_keys, monkeypatch, function):
    lance_env(monkeypatch, "s3://nowhere/ragfn", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    response = client(function).get("/")
    assert response.status_code == 500
    body = response.get_json()
    assert body["error"] == "ConfigError" and "RAGFN_LANCEDB_URI='s3://nowhere/ragfn'" in body["message"]
    assert "RAGFN_S3_ENDPOINT_URL" in body["hint"]


def test_a_missing_bucket_is_named_at_start_up(ragfn_env, monkeypatch, moto_server):
    lance_env(monkeypatch, "s3://no-such-bucket/ragfn", moto_server)
    with pytest.raises(ConfigError, match="no-such-bucket"):
        Runtime(load_settings()).index.warm_up()


def test_a_reachable_bucket_turns_ready(ragfn_env, service_keys, monkeypatch, moto_server, bucket):
    lance_env(monkeypatch, f"s3://{bucket}/ragfn", moto_server)
    assert client("retrieve").get("/").get_json() == {"function": "retrieve", "ready": True}


def test_the_bucket_away_mid_ingest_is_retried_and_redelivery_leaves_the_index_exact(ragfn_env, monkeypatch,
                                                                                       bucket, proxy):
    lance_env(monkeypatch, f"s3://{bucket}/ragfn", proxy.url)
    index = client("index")
    first, second = make_batches("default", "v1", 10, ["alpha one", "alpha two", "alpha three"])
    assert post(index, events.EMBEDDED, first).status_code == 200
    proxy.cut()
    failed = post(index, events.EMBEDDED, second)
    assert failed.status_code == 503 and failed.get_json()["retryable"] is True
    assert "vector store unavailable" in failed.get_json()["message"]
    proxy.restore()
    for batch in (second, first, second):  # Knative's redelivery, and a duplicate of the first batch
        assert post(index, events.EMBEDDED, batch).status_code == 200
    reader = Runtime(load_settings()).index
    assert stored(reader, "default") == sorted(("v1", t) for t in ["alpha one", "alpha two", "alpha three"])
    assert reader.ledger_entry("default", URI).chunks == 3


def test_the_bucket_away_mid_query_is_a_clear_vector_store_unavailable(ragfn_env, monkeypatch, bucket, proxy):
    lance_env(monkeypatch, f"s3://{bucket}/ragfn", proxy.url)
    runtime = Runtime(load_settings())
    for batch in make_batches("default", "v1", 10, ["alpha one", "alpha two"]):
        runtime.index.write_batch(batch)
    vector = np.ones(8, dtype=np.float32)
    assert runtime.index.dense_search("default", vector, top_k=5, caller=Caller("acme", ("eng",)))
    proxy.cut()
    with pytest.raises(Unavailable, match="vector store unavailable"):
        runtime.index.dense_search("default", vector, top_k=5, caller=Caller("acme", ("eng",)))
    with pytest.raises(Unavailable, match="lexical search unavailable"):
        runtime.index.lexical_search("default", "alpha", top_k=5, caller=Caller("acme", ("eng",)))
    proxy.restore()
    assert runtime.index.lexical_search("default", "alpha", top_k=5, caller=Caller("acme", ("eng",)))
