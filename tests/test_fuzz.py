"""Property-based fuzzing, bounded for CI: what untrusted input reaches may refuse it, never crash or hang on it.

- the storage-event parser (every bucket's notification shape, and ragfn's own events);
- the loaders (bytes under any name and content type);
- the cache guard (two questions of any text);
- the gateway, from its own OpenAPI document (schemathesis): no route answers a 5xx to any request it documents.
Each property runs a bounded number of examples (FUZZ_EXAMPLES); longer runs: `RAGFN_FUZZ_EXAMPLES=5000 pytest ...`.
"""

from __future__ import annotations

import os
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragfn.core.errors import BadEvent
from ragfn.eventing import events

FUZZ_EXAMPLES = int(os.environ.get("RAGFN_FUZZ_EXAMPLES", "150"))
BOUNDED = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                   database=None)

# JSON values, biased toward the keys and shapes the parsers look for, so examples get past the first checks
KEYS = st.sampled_from(["Records", "s3", "bucket", "object", "name", "key", "eventName", "eventSource", "sequencer",
                        "versionId", "size", "uri", "collection", "tenant", "groups", "version", "sequence",
                        "generation", "metadata", "userMetadata", "Key", "EventName", "Message", "Body", "detail",
                        "ragfn-tenant", "ragfn-groups", "contentType", "timeCreated", "x"])
LEAVES = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=40) \
    | st.sampled_from(["s3://b/k.md", "gs://b/k.md", "file:///etc/passwd", "../../x", "ObjectCreated:Put",
                       "aws:s3", "minio:s3", "ffffffffffffffffffffffff", "0055AED6DCD90281E5", "%2e%2e/x"])
JSON = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.text(max_size=8),
                                                                                       inner, max_size=6),
                    max_leaves=30)
TYPES = st.sampled_from([None, events.S3_NOTIFICATION, events.MINIO_NOTIFICATION, events.GCS_FINALIZED,
                         events.GCS_DELETED, events.DOCUMENT_UPSERTED, events.DOCUMENT_DELETED,
                         "dev.knative.connector.event.aws-sqs", "com.example.unknown"])


@pytest.mark.unit
@BOUNDED
@given(event_type=TYPES, data=JSON | st.binary(max_size=200) | st.text(max_size=200))
def test_the_storage_event_parser_refuses_or_parses(event_type, data):
    from ragfn.ingest.storage_events import ObjectChange, parse_storage_event

    try:
        changes = parse_storage_event(event_type, data)
    except BadEvent:
        return
    assert all(isinstance(change, ObjectChange) for change in changes)


NAMES = st.sampled_from(["a.md", "a.txt", "a.rst", "a.html", "a.pdf", "a.htm", "a", "a.bin", "../a.md"])
CONTENT_TYPES = st.sampled_from([None, "text/plain", "text/markdown", "text/html", "application/pdf",
                                 "text/x-rst", "application/octet-stream", "text/html; charset=latin-1"])
MARKUP = st.lists(st.sampled_from(["<div>", "</div>", "<b>", "<h1>", "</h1>", "<pre>", "<!--", "-->", "<p>", "# ",
                                   "\n\n", "```", ".. code::", "%PDF-1.4\n", "<main>", "<a href='x'>", "]]>", "x",
                                   "\x00", "\ufeff", "é"]), max_size=60).map("".join)


@pytest.mark.unit
@BOUNDED
@given(data=st.binary(max_size=3000) | MARKUP.map(str.encode), name=NAMES, content_type=CONTENT_TYPES)
def test_the_loaders_refuse_or_load(data, name, content_type):
    from ragfn.ingest.loaders import LoadedDocument, load_document

    try:
        doc = load_document(data, name=name, content_type=content_type)
    except BadEvent:  # UnsupportedContent, ObjectTooLarge: a 400 that says why
        return
    assert isinstance(doc, LoadedDocument)
    for block in doc.blocks:
        assert 0 <= block.start <= block.end <= len(doc.text)


QUESTION = st.text(alphabet=string.printable + "éß€", max_size=400) | st.lists(
    st.sampled_from(["Who", "When", "None", "not", ";", ".", "C++", "3.11", "x.y", "f(", "a_b", "CamelCase", " ",
                     "Python", "sort", "list", "?"]), max_size=120).map(" ".join)


@pytest.mark.unit
@BOUNDED
@given(asked=QUESTION, cached=QUESTION)
def test_the_cache_guard_answers_for_any_two_questions(asked, cached):
    from ragfn.cache.guard import conflicting

    assert conflicting(asked, cached) in (None, "negation", "number", "entity", "intent")
    assert conflicting(asked, asked) is None


# -- the gateway, from its OpenAPI document ------------------------------------------------------------------------

@pytest.fixture
def api(gateway, event_sink, monkeypatch):
    import schemathesis
    from conftest import REDIS_URL

    client, _ = gateway
    # as deployed: an event sink for uploads, Redis for feedback and rate limits (so a 503 is a finding)
    app = client(K_SINK=event_sink.url, RAGFN_REDIS_URL=REDIS_URL, RAGFN_RATE_LIMIT="100000",
                 RAGFN_READ_RATE_LIMIT="100000").application
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


@pytest.mark.integration
def test_no_documented_request_gets_a_5xx_from_the_gateway(api):
    from hypothesis import given as hypothesis_given

    seen: dict[str, int] = {}

    def fuzz(operation) -> None:
        @settings(max_examples=max(5, FUZZ_EXAMPLES // 10), deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @hypothesis_given(case=operation.as_strategy())
        def check(case):
            for headers in ({"Authorization": "Bearer key-acme"}, {}):
                response = case.call(headers=headers)
                seen[operation.label] = seen.get(operation.label, 0) + 1
                assert response.status_code < 500, (operation.label, case.body, response.status_code,
                                                    response.text[:300])

        check()

    for result in api.get_all_operations():
        fuzz(result.ok())
    assert len(seen) >= 8, seen  # every documented route was exercised
