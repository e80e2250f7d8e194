"""The ask gateway's HTTP contract: response models, one table of routes, and the OpenAPI 3.1 document built from them.

The request models are the ones the gateway validates with (`AskRequest`, `FeedbackRequest`); the response models
describe what the gateway's code returns, and tests/test_openapi.py holds real responses to them. The document is
assembled here from pydantic's JSON Schemas (OpenAPI 3.1 speaks JSON Schema 2020-12, which pydantic emits) rather than
by a Flask-OpenAPI library: those validate requests themselves and answer 422 with bodies of their own, which would
change the gateway's error format.
"""

from __future__ import annotations

from dataclasses import dataclass, field, is_dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ragfn.gateway.ask import AskRequest
from ragfn.gateway.uploads import UploadReceipt, UploadStatus

REF = "#/components/schemas/{model}"


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="the answer_id of the answer's final record")
    rating: Literal["up", "down"]
    comment: str = Field("", max_length=2000)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # the document names every field a response has


class ErrorBody(_Body):
    """Every refusal and failure: the error class, what is wrong, whether to retry, and how to fix it."""

    error: str = Field(description="the ragfn error class, e.g. BadEvent, ObjectTooLarge, RequestTooLarge, "
                       "Unauthorized, Forbidden, RateLimitExceeded, Unavailable")
    message: str
    retryable: bool
    hint: str | None = Field(None, description="what to do about it; absent when there is nothing to add")


class Citation(_Body):
    n: int = Field(description="the [n] the answer cites")
    source: str = Field(description="the document's URI")
    chunk_id: str
    text: str
    heading_path: str = Field(description="the section, e.g. 'Lists › Sorting'")
    start: int = Field(description="character offsets of the passage in the document's text")
    end: int


class GateVerdict(_Body):
    passed: bool
    reason: Literal["empty", "repetition", "cut-off", "unsupported"] | None = Field(
        description="why the model's answer failed: empty, a repetition loop, cut off with nothing supported, or "
                    "sentences the passages do not support")
    groundedness: float | None = Field(description="the share of its sentences the passages support; null when "
                                       "no sentence had enough words to judge")


class AnswerFinal(_Body):
    """The closing record of an answer: the last `final` event of a stream, and part of a JSON answer."""

    answer_id: str | None = Field(description="rate the answer with it (POST /v1/feedback); null without Redis")
    cache: Literal["hit", "miss", "off"]
    degraded: str | None = Field(description="why the answer is degraded, '+'-joined (cold-start, llm-unavailable, "
                                 "llm-rejected, ungrounded-answer, retrieve-unavailable, vector-store-unavailable, "
                                 "cache-unavailable)")
    citations_inferred: bool = Field(description="the model cited nothing; the sources were matched by ragfn")
    truncated: bool = Field(description="generation stopped at max_tokens")
    model: str | None = Field(description="the model that wrote the answer shown ('extractive' for the model-free "
                              "engine); null when none was asked")
    provider: Literal["primary", "fallback", "extractive"] | None = Field(
        description="which provider wrote it: the primary model, the second provider (RAGFN_LLM_FALLBACK_URL), "
                    "or the extractive engine; null for a cache hit or when nothing was generated")
    gate: GateVerdict | None = Field(description="the groundedness gate's verdict on the model's answer; null when "
                                     "it did not judge one (gate off, a cache hit, the extractive engine)")
    timings_ms: dict[str, float] = Field(description="per stage: cache, retrieve, generate, cache_store")


class Answer(AnswerFinal):
    answer: str
    citations: list[Citation]


class StreamStatus(_Body):
    """A `status` event: the answer that follows is degraded, and why."""

    degraded: str
    message: str


class StreamReplace(_Body):
    """A `replace` event: the tokens streamed so far failed the groundedness gate; show `text` instead (the
    extractive answer from the same passages). The `citations` event that follows is the replacement's."""

    text: str
    degraded: Literal["ungrounded-answer"]
    reason: Literal["empty", "repetition", "cut-off", "unsupported"]
    message: str


class FeedbackRecorded(_Body):
    answer_id: str
    rating: Literal["up", "down"]
    replaced: Literal["up", "down"] | None = Field(description="the caller's earlier rating of the answer, if any")


class CollectionCount(_Body):
    documents: int
    chunks: int


class Me(_Body):
    subject: str = Field(description="the key's name or the JWT's sub")
    tenant: str = Field(description="'' for the untenanted space")
    groups: list[str]
    collections: dict[str, CollectionCount] = Field(description="collections where the tenant has indexed documents")


class Warmup(_Body):
    llm: str = Field(description="the engine's name, or the model name the predictor serves")
    state: str = Field(description="ready, or how far the predictor's warm-up has got")
    warming: bool
    gave_up: bool | None = Field(None, description="warm-ups gave up: the predictor is reported down")


class Ready(_Body):
    function: Literal["ask"]
    ready: bool


STREAM_EVENTS = {"status": StreamStatus, "token": str, "replace": StreamReplace, "citations": list[Citation],
                 "final": AnswerFinal, "error": ErrorBody}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    responses: dict[int, type | str]  # status -> response model; a str is a description of a body-less answer
    body: type | None = None
    form: bool = False  # multipart/form-data (uploads)
    query: tuple[tuple[str, bool, str], ...] = ()  # (name, required, description)
    authenticated: bool = True
    # counts against a rate limit (the tenant's questions, or the caller's reads): 2xx answers carry X-RateLimit-*
    # (with Redis)
    limited: bool = False
    tags: tuple[str, ...] = field(default=("gateway",))


_CALLER = {401: ErrorBody, 500: ErrorBody, 503: ErrorBody}
_LIMITED = _CALLER | {429: ErrorBody}
_ASK = Route("post", "/v1/ask", "Ask a question: one JSON answer, or server-sent events with \"stream\": true",
             {200: Answer, 400: ErrorBody} | _LIMITED, body=AskRequest, limited=True)
_WARMUP = {200: Warmup, 202: Warmup} | _LIMITED
_WAKE = "Wake the predictor in the background (a chat signed in)"
ROUTES = (
    _ASK,
    Route("post", "/", "The same as POST /v1/ask (kept for clients of the single-function gateway)",
          _ASK.responses, body=AskRequest, limited=True),
    Route("post", "/v1/feedback", "Rate one of your answers up or down, with an optional comment",
          {200: FeedbackRecorded, 400: ErrorBody, 404: ErrorBody} | _LIMITED, body=FeedbackRequest, limited=True),
    Route("post", "/v1/documents", "Upload a document (multipart: file, collection?, groups?); queued for ingestion",
          {202: UploadReceipt, 400: ErrorBody, 403: ErrorBody} | _LIMITED, form=True, limited=True),
    Route("get", "/v1/documents/status", "How far an upload has got: queued, indexing, indexed, replaced or failed",
          {200: UploadStatus, 400: ErrorBody, 404: ErrorBody} | _LIMITED, limited=True,
          query=(("document_id", True, "from the upload's receipt"), ("version", True, "from the upload's receipt"),
                 ("collection", False, "default: default"), ("event_id", False, "ties a dead letter to the upload"))),
    Route("get", "/v1/me", "Who is signed in, and what their tenant has indexed per collection",
          {200: Me} | _LIMITED, limited=True),
    Route("post", "/v1/warmup", _WAKE, _WARMUP, limited=True),
    Route("get", "/v1/warmup", _WAKE, _WARMUP, limited=True),
    Route("get", "/", "Readiness: any GET outside the API answers this", {200: Ready}, authenticated=False),
    Route("get", "/openapi.json", "This document", {200: "the OpenAPI 3.1 document"}, authenticated=False),
)
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad request: the body, form or query is invalid (see message, hint)",
            401: "Missing or invalid credentials (WWW-Authenticate: Bearer)", 403: "Groups beyond the caller's own",
            404: "Not found", 429: "Over the tenant's rate limit (Retry-After)", 500: "Settings that cannot work, or a "
            "bug; retryable", 503: "A dependency the request needs is down; retryable"}


_RETRY = {"Retry-After": {"description": "seconds until a retry may succeed: on a rate limit, and on an open breaker",
                          "schema": {"type": "integer", "minimum": 1}}}
_HEADERS = {401: {"WWW-Authenticate": {"schema": {"type": "string", "const": 'Bearer realm="ragfn"'}}},
            429: _RETRY, 503: _RETRY}
_LIMIT_HEADERS = {"X-RateLimit-Limit": {"description": "requests per window (Redis)", "schema": {"type": "integer"}},
                  "X-RateLimit-Remaining": {"description": "left in this window", "schema": {"type": "integer"}}}


class _Schemas:
    """Component schemas, each named after its type, shared by every route that uses the type."""

    def __init__(self) -> None:
        self.components: dict[str, dict] = {}

    def ref(self, tp: type, mode: Literal["validation", "serialization"] = "serialization") -> dict:
        schema = TypeAdapter(tp).json_schema(ref_template=REF, mode=mode)
        self.components.update(schema.pop("$defs", {}))
        if not (isinstance(tp, type) and (issubclass(tp, BaseModel) or is_dataclass(tp))):
            return schema  # list[Citation], str: inline
        self.components[tp.__name__] = schema
        return {"$ref": REF.format(model=tp.__name__)}


def _operation(route: Route, schemas: _Schemas) -> dict:
    operation: dict = {"summary": route.summary, "tags": list(route.tags),
                       "operationId": f"{route.method}_{route.path.strip('/').replace('/', '_') or 'root'}",
                       "responses": {}}
    if route.authenticated:
        operation["security"] = [{"bearer": []}, {"apiKey": []}]
    if route.body is not None:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": schemas.ref(route.body, "validation")}}}
    if route.form:
        operation["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"], "properties": {
                "file": {"type": "string", "format": "binary", "description": "up to RAGFN_MAX_OBJECT_BYTES"},
                "collection": {"type": "string", "default": "default"},
                "groups": {"type": "string", "description": "comma-separated ACL groups; empty: the whole tenant"}}}}}}
    if route.query:
        operation["parameters"] = [{"name": name, "in": "query", "required": required, "description": text,
                                    "schema": {"type": "string"}} for name, required, text in route.query]
    for status, model in route.responses.items():
        if isinstance(model, str):
            operation["responses"][str(status)] = {"description": model}
            continue
        response = {"description": _REASONS.get(status, "OK"),
                    "content": {"application/json": {"schema": schemas.ref(model)}}}
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        elif route.limited and status < 300:
            response["headers"] = _LIMIT_HEADERS
        if route.body is AskRequest and status == 200:
            response["content"]["text/event-stream"] = {
                "schema": {"type": "string"},
                "x-events": {name: schemas.ref(tp) for name, tp in STREAM_EVENTS.items()}}
            response["description"] = ("JSON, or with \"stream\": true server-sent events: status?, token*, "
                                       "replace?, citations, final (or error once the stream has started)")
        operation["responses"][str(status)] = response
    return operation


def openapi_document(version: str) -> dict:
    schemas = _Schemas()
    paths: dict[str, dict] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method] = _operation(route, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "ragfn ask gateway", "version": version,
                 "description": "Questions answered from your documents, with citations; uploads, ratings."},
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.components.items())),
                       "securitySchemes": {
                           "bearer": {"type": "http", "scheme": "bearer",
                                      "description": "an API key, or an HS256 JWT with tenant and groups claims"},
                           "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
    }
