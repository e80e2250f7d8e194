"""The gateway's OpenAPI document: valid OpenAPI 3.1, naming every route the app serves, and true to real answers."""

from __future__ import annotations

import io
import json

import httpx_sse
import jsonschema
import pytest
from openapi_spec_validator import validate

from conftest import REDIS_URL, ask

pytestmark = pytest.mark.integration
HEADERS = {"Authorization": "Bearer key-acme"}


@pytest.fixture
def api(gateway):
    client, _ = gateway
    app = client(RAGFN_REDIS_URL=REDIS_URL)  # feedback and rate limits need Redis
    return app, app.get("/openapi.json").get_json()


def check(document: dict, method: str, path: str, response, *, content: str = "application/json") -> None:
    """The response's status is documented for the operation, and its body matches that status's schema."""
    documented = document["paths"][path][method]["responses"]
    assert str(response.status_code) in documented, (method, path, response.status_code, response.get_data())
    schema = documented[str(response.status_code)]["content"][content]["schema"]
    validator = jsonschema.Draft202012Validator({**schema, "components": document["components"]})
    validator.validate(response.get_json())


def test_the_document_is_valid_openapi_3_1(api):
    _, document = api
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"] == "3.1.0"


def test_every_route_the_app_serves_is_documented_and_nothing_else(api, gateway):
    app, document = api
    served = {(method.lower(), rule.rule) for rule in app.application.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(method, path) for path, operations in document["paths"].items() for method in operations}
    assert served - documented == set()
    assert documented - served == {("get", "/")}  # readiness: any unrouted GET, served by the 404 handler


def test_answers_errors_and_the_stream_match_their_schemas(api):
    app, document = api
    check(document, "post", "/v1/ask", ask(app, "How do I sort a list?"))
    check(document, "post", "/v1/ask", app.post("/v1/ask", json={"question": "x"}))  # 401
    check(document, "post", "/v1/ask", ask(app, ""))  # 400: question too short
    check(document, "post", "/", app.post("/", json={"question": "How do I sort a list?"}, headers=HEADERS))
    streamed = ask(app, "How do I sort a list?", stream=True)
    assert streamed.status_code == 200 and streamed.mimetype == "text/event-stream"
    events = document["paths"]["/v1/ask"]["post"]["responses"]["200"]["content"]["text/event-stream"]["x-events"]
    seen = []
    for line in streamed.get_data(as_text=True).split("\n\n"):
        if not line.strip():
            continue
        event = httpx_sse.ServerSentEvent(**dict(part.split(": ", 1) for part in line.split("\n")))
        seen.append(event.event)
        jsonschema.Draft202012Validator({**events[event.event], "components": document["components"]}).validate(
            event.json())
    assert seen[0] == "token" and seen[-2:] == ["citations", "final"]


def test_the_callers_routes_match_their_schemas(api):
    app, document = api
    check(document, "get", "/v1/me", app.get("/v1/me", headers=HEADERS))
    check(document, "get", "/v1/me", app.get("/v1/me"))  # 401
    final = ask(app, "How do I sort a list?").get_json()
    rated = app.post("/v1/feedback", headers=HEADERS, json={"answer_id": final["answer_id"], "rating": "up"})
    assert rated.status_code == 200
    check(document, "post", "/v1/feedback", rated)
    check(document, "post", "/v1/feedback", app.post("/v1/feedback", headers=HEADERS, json={
        "answer_id": "0" * 32, "rating": "down"}))  # 404: no such answer
    check(document, "post", "/v1/feedback", app.post("/v1/feedback", headers=HEADERS, json={"rating": "sideways"}))
    check(document, "post", "/v1/documents", app.post("/v1/documents", headers=HEADERS, data={"other": "x"},
                                                       content_type="multipart/form-data"))  # 400
    check(document, "get", "/v1/documents/status", app.get("/v1/documents/status", headers=HEADERS))  # 400
    check(document, "post", "/v1/warmup", app.post("/v1/warmup", headers=HEADERS))
    check(document, "post", "/v1/warmup", app.post("/v1/warmup"))  # 401
    check(document, "get", "/", app.get("/"))
    check(document, "get", "/", app.get("/healthz"))  # any unrouted GET is the readiness probe


def test_an_upload_and_its_status_match_their_schemas(api, event_sink):
    app, document = api
    receipt = app.post("/v1/documents", headers=HEADERS, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(b"# Notes\n\nSorting is done with sorted().\n"), "notes.md")})
    check(document, "post", "/v1/documents", receipt)
    documented = document["paths"]["/v1/documents"]["post"]["responses"]["202"]["headers"]
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining"} <= set(documented) <= set(receipt.headers.keys())
    check(document, "post", "/v1/documents", app.post(  # 403: groups beyond the caller's own
        "/v1/documents", headers=HEADERS, content_type="multipart/form-data",
        data={"file": (io.BytesIO(b"# Notes\n\nSecret.\n"), "secret.md"), "groups": "finance"}))
    body = receipt.get_json()
    check(document, "get", "/v1/documents/status", app.get("/v1/documents/status", headers=HEADERS, query_string={
        "document_id": body["document_id"], "version": body["version"], "collection": body["collection"]}))


def test_an_unrouted_post_names_the_routes_in_the_error_body(api):
    app, document = api
    response = app.post("/v1/nowhere", json={})
    assert response.status_code == 400
    jsonschema.Draft202012Validator({"$ref": "#/components/schemas/ErrorBody", "components": document["components"]}
                                    ).validate(response.get_json())
    assert json.loads(response.get_data())["message"] == "no route /v1/nowhere"
    for odd in (app.open("/v1/ask", method="OPTIONS"), app.post("/v1//ask", json={}), app.put("/v1/ask", json={})):
        assert odd.status_code == 400 and odd.get_json()["error"] == "BadEvent", odd.get_data()  # never a redirect
    assert app.post("/v1/ask/", json={}).status_code == 401  # one trailing slash is the route itself
