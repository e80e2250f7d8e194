"""The one wrapper every function uses: parse the CloudEvent, validate it, open a span, map errors to HTTP.

    @cloud_function("embed", accepts={events.CHUNKS: ChunkBatch})
    def handle(event: InboundEvent, runtime: Runtime) -> StageResult: ...

`handle` is then a functions-framework HTTP function. Its first outgoing event is the reply (a binary-mode
CloudEvent the Broker routes on); functions that fan out publish to K_SINK themselves and reply with JSON.
Status codes follow Knative's delivery spec: 2xx done, 400 permanent (dead-letter), 404/429/5xx retried.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import flask
import functions_framework
import httpx
from cloudevents import exceptions as ce_errors
from cloudevents.conversion import to_binary
from cloudevents.http import from_http
from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from ragfn.core.config import load_settings
from ragfn.core.errors import BadEvent, RagfnError, RequestTooLarge, Unavailable, problems
from ragfn.core.telemetry import configure_tracing, context_from_event, tracer
from ragfn.eventing.publish import StageResult
from ragfn.serve.runtime import Runtime
from ragfn.store.base import Caller

log = logging.getLogger("ragfn.handler")
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # a CloudEvent: a batch of chunks and their vectors at most
MAX_JSON_BYTES = 256 * 1024  # a query-path request: a question, or a cache store with its answer and citations


@dataclass(frozen=True)
class InboundEvent:
    type: str | None  # None for a plain JSON POST (MinIO's webhook sends no CloudEvent envelope)
    id: str | None
    time: datetime | None
    data: object  # the validated model for declared types, else decoded JSON
    attributes: Mapping[str, object]


def read_body(request: flask.Request, limit: int, *, hint: str) -> bytes:
    """At most `limit` bytes of the body, with or without a Content-Length: a body declared larger is refused before
    any of it is read, and one sent without a length (chunked) once `limit` + 1 bytes have arrived."""
    too_large = RequestTooLarge(f"the request body is over the limit of {limit} bytes", hint=hint)
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise too_large
    return data


def parse_request(request: flask.Request, *, allow_plain_json: bool,
                  max_bytes: int = MAX_REQUEST_BYTES) -> InboundEvent:
    body = read_body(request, max_bytes, hint="an event carries a reference to a document, not the document")
    headers = {k.lower(): v for k, v in request.headers.items()}
    is_cloudevent = "ce-specversion" in headers or headers.get("content-type", "").startswith(
        "application/cloudevents+json")
    if not is_cloudevent:
        if not allow_plain_json:
            raise BadEvent("request is not a CloudEvent", hint="send ce-* headers (binary mode) or "
                           "Content-Type: application/cloudevents+json (structured mode)")
        return InboundEvent(None, None, None, decode_json(body), {})
    try:
        event = from_http(headers, body)
    except (ce_errors.GenericException, ValueError, TypeError) as exc:
        raise BadEvent(f"malformed CloudEvent: {exc}") from exc
    attributes = dict(event.get_attributes())
    data = event.get_data()
    if isinstance(data, (bytes, str)) and data:
        data = decode_json(data)  # binary mode with a content type that cloudevents did not decode
    time = None
    if attributes.get("time"):
        try:
            time = datetime.fromisoformat(str(attributes["time"]).replace("Z", "+00:00"))
        except ValueError as exc:
            raise BadEvent(f"CloudEvent attribute time={attributes['time']!r} is not RFC 3339") from exc
    return InboundEvent(str(attributes["type"]), str(attributes["id"]), time, data, attributes)


def decode_json(body: bytes | str) -> object:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEvent(f"event data is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # arrays nested thousands deep: junk, not a retryable failure
        raise BadEvent("event data is JSON nested too deeply") from exc


def validate(event: InboundEvent, accepts: Mapping[str, type[BaseModel] | None]) -> InboundEvent:
    if event.type is not None and event.type not in accepts:
        raise BadEvent(f"unknown event type {event.type!r}", hint=f"this function accepts {sorted(accepts)}")
    model = accepts.get(event.type) if event.type else None
    if model is None:
        return event
    try:
        return InboundEvent(event.type, event.id, event.time, model.model_validate(event.data), event.attributes)
    except ValidationError as exc:
        raise BadEvent(f"invalid {event.type} data: {problems(exc)}") from exc


def error_response(error: RagfnError, event: InboundEvent | None = None) -> flask.Response:
    body = error.to_dict()
    if event is not None:
        body |= {"event_id": event.id, "event_type": event.type}
    response = flask.Response(json.dumps(body), status=error.status, mimetype="application/json")
    retry_after = getattr(error, "retry_after", None)  # a rate limit or an open breaker knows when to come back
    if retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return response


def reply(result: StageResult, *, as_event: bool) -> flask.Response:
    if as_event and result.events:
        headers, payload = to_binary(result.events[0].to_cloudevent())
        return flask.Response(payload, status=200, headers=dict(headers))
    return flask.Response(json.dumps(result.summary), status=200, mimetype="application/json")


class LazyRuntime:
    """Builds the function's Runtime on the first request, never at import."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()
        self.index_ready = False  # the index answered a readiness probe once; it is not asked again

    def get(self) -> Runtime:
        with self._lock:
            if self._runtime is None:
                settings = load_settings()
                configure_tracing(settings, self.service)
                self._runtime = Runtime(settings)
            return self._runtime


Handler = Callable[[InboundEvent, Runtime], StageResult]


def _in_span(name: str, parent, kind: trace.SpanKind, attributes: dict, call: Callable[[trace.Span], object]):
    with tracer().start_as_current_span(f"ragfn.{name}", context=parent, kind=kind) as span:
        span.set_attributes(attributes | {"ragfn.function": name})
        try:
            return call(span)
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
            raise


def unbuffered(response: flask.Response) -> flask.Response:
    """The answer as a stream: functions-framework reads the whole request into memory before answering anything
    else (its after_request `read_request`), so a 401 or a readiness answer to a request with an endless body would
    hold it all. gunicorn discards what the function did not read, holding nothing."""
    if not response.is_streamed:
        response.response = iter(response.response)
    return response


def guarded(name: str, call: Callable[[], flask.Response], event: Callable[[], InboundEvent | None]) -> flask.Response:
    """The one place errors become HTTP answers: RagfnError by its status, anything else a retryable 500."""
    try:
        return call()
    except RagfnError as exc:
        log.warning("%s: %s", name, exc)
        return error_response(exc, event())
    except (httpx.TransportError, ConnectionError) as exc:  # a service it needs is out of reach: the sender retries
        log.warning("%s: a dependency is out of reach: %s: %s", name, type(exc).__name__, exc)
        return error_response(Unavailable(f"{name}: a service it needs is out of reach ({type(exc).__name__})",
                                          hint="retried by the sender; the log names the service"), event())
    except Exception:  # never let one bad request take the worker down
        # the exception's text stays in the log (it can name hosts, paths, or someone else's data): the caller
        # gets a reference to find it there
        reference = uuid.uuid4().hex[:12]
        log.exception("%s: unexpected failure (reference %s)", name, reference)
        return error_response(RagfnError(f"internal error in {name} (reference {reference})",
                                         hint=f"the {name} log has the details under this reference"), event())


def _ready(name: str, runtime: LazyRuntime, uses_index: bool, *, verifies_callers: bool = False) -> flask.Response:
    """The readiness probe: settings load, and the index answers where the function uses it. A bad RAGFN_STORE, an
    unreachable bucket or refused credentials keep a revision from turning ready (Knative keeps the last good one
    serving) instead of failing its first request; so does a missing service key file where callers are verified,
    or a delivery audience without its senders."""
    return guarded(name, lambda: _check_ready(name, runtime, uses_index, verifies_callers), lambda: None)


def _check_ready(name: str, runtime: LazyRuntime, uses_index: bool, verifies_callers: bool) -> flask.Response:
    if verifies_callers:
        runtime.get().service_keys
    else:
        runtime.get().delivery_verifier
    if uses_index and not runtime.index_ready:
        runtime.get().index.warm_up()
        runtime.index_ready = True
    else:
        runtime.get()
    return flask.jsonify({"function": name, "ready": True})


def _metrics_response(registry) -> flask.Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return flask.Response(generate_latest(registry), status=200, mimetype=None,
                          headers={"Content-Type": CONTENT_TYPE_LATEST})


def cloud_function(name: str, *, accepts: Mapping[str, type[BaseModel] | None], reply_with_event: bool = True,
                   allow_plain_json: bool = False, metrics: Callable[[Runtime], object] | None = None,
                   uses_index: bool = False, admit: Callable[[flask.Request, Runtime], None] | None = None,
                   max_body_bytes: int = MAX_REQUEST_BYTES,
                   ) -> Callable[[Handler], Callable[[flask.Request], flask.Response]]:
    """`metrics`, when given, returns the function's Prometheus registry: served on GET /metrics. `uses_index`: the
    readiness probe also checks that the index answers. With RAGFN_EVENT_AUDIENCE set, a delivery needs a valid
    token of an allowed sender (ragfn.eventing.delivery_auth); `admit` then checks the sender of a public endpoint,
    both from the request's headers before any of its body is read; `max_body_bytes` caps the body."""

    def decorate(handle: Handler) -> Callable[[flask.Request], flask.Response]:
        runtime = LazyRuntime(f"ragfn-{name}")

        @functions_framework.http
        @functools.wraps(handle)
        def view(request: flask.Request) -> flask.Response:
            if request.method == "GET" and metrics is not None and request.path == "/metrics":
                return unbuffered(guarded(name, lambda: _metrics_response(metrics(runtime.get())), lambda: None))
            if request.method == "GET":  # readiness probe
                return unbuffered(_ready(name, runtime, uses_index))
            parsed: list[InboundEvent] = []

            def run() -> flask.Response:
                if (verifier := runtime.get().delivery_verifier) is not None:  # before the body is read
                    verifier.verify(request.headers)
                if admit is not None:
                    admit(request, runtime.get())
                parsed.append(validate(parse_request(request, allow_plain_json=allow_plain_json,
                                                     max_bytes=max_body_bytes), accepts))
                event, context = parsed[0], runtime.get()  # runtime first: it installs the tracer provider

                def call(span: trace.Span) -> flask.Response:
                    result = handle(event, context)
                    span.set_attribute("ragfn.events_out", len(result.events))
                    return reply(result, as_event=reply_with_event)

                return _in_span(name, context_from_event(event.attributes), trace.SpanKind.CONSUMER,
                                {"cloudevents.event_id": event.id or "", "cloudevents.event_type": event.type or ""},
                                call)

            return unbuffered(guarded(name, run, lambda: parsed[0] if parsed else None))

        return view

    return decorate


def json_function(name: str, *, request_model: type[BaseModel], uses_index: bool = False):
    """A synchronous JSON-over-HTTP function (the query path): validated body in, JSON out, same errors and spans.
    The caller comes from the gateway's signed token for `name` (ragfn.core.service_auth), checked first: a request
    without a valid one is a 401 before its body is read."""

    def decorate(handle: Callable[[BaseModel, Runtime, Caller], dict]) -> Callable[[flask.Request], flask.Response]:
        runtime = LazyRuntime(f"ragfn-{name}")

        @functions_framework.http
        @functools.wraps(handle)
        def view(request: flask.Request) -> flask.Response:
            if request.method == "GET":
                return unbuffered(_ready(name, runtime, uses_index, verifies_callers=True))

            def run() -> flask.Response:
                context = runtime.get()
                identity = context.service_keys.verify(request.headers, audience=name)
                caller = Caller(identity.tenant or None, identity.groups)
                body = decode_json(read_body(request, MAX_JSON_BYTES, hint=f"{name} takes a question and a few "
                                             "settings as JSON"))
                try:
                    parsed = request_model.model_validate(body)
                except ValidationError as exc:
                    raise BadEvent(f"invalid request: {problems(exc)}") from exc
                parent = context_from_event({k.lower(): v for k, v in request.headers.items()})
                result = _in_span(name, parent, trace.SpanKind.SERVER, {"ragfn.caller.subject": identity.subject},
                                  lambda span: handle(parsed, context, caller))
                return flask.Response(json.dumps(result), status=200, mimetype="application/json")

            return unbuffered(guarded(name, run, lambda: None))

        return view

    return decorate
