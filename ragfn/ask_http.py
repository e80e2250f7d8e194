"""The ask gateway over HTTP: authentication, per-tenant rate limits, JSON or server-sent events; feedback, uploads."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import asdict
from typing import Literal

import flask
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.exceptions import RequestEntityTooLarge

from ragfn.auth import ApiKeys, Identity, Unauthorized, authorize
from ragfn.config import load_settings
from ragfn.errors import BadEvent, ConfigError, ObjectTooLarge, RagfnError, Unavailable, problems
from ragfn.gateway import AskRequest
from ragfn.handler import LazyRuntime, decode_json, error_response, guarded
from ragfn.keepalive import KeepAlive
from ragfn.runtime import Runtime
from ragfn.search import Caller
from ragfn.telemetry import context_from_headers
from ragfn.uploads import StatusQuery, Upload, Uploads, split_groups

FORM_ALLOWANCE = 64 * 1024  # multipart boundaries and part headers, and the small fields beside the file
ROUTES = "POST /v1/ask, /v1/feedback, /v1/documents or /v1/warmup; GET /v1/me or /v1/documents/status"


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="the answer_id of the answer's final record")
    rating: Literal["up", "down"]
    comment: str = Field("", max_length=2000)


def sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def as_json(body: object, headers: dict, status: int = 200) -> flask.Response:
    return flask.Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)


def read_upload(request: flask.Request, limit: int) -> Upload:
    """The multipart form of POST /v1/documents, its body bounded before anything of it is read."""
    allowed = limit + FORM_ALLOWANCE
    too_large = ObjectTooLarge(f"the upload is over the limit of {limit} bytes",
                               hint="split the document, or raise RAGFN_MAX_OBJECT_BYTES on the gateway and chunk")
    if request.content_length is not None and request.content_length > allowed:
        raise too_large
    if request.mimetype != "multipart/form-data":
        raise BadEvent(f"expected multipart/form-data, got {request.mimetype or 'no Content-Type'}",
                       hint="send the file as a form field named `file`, e.g. curl -F file=@notes.md")
    request.max_content_length = allowed  # also stops a body sent without Content-Length (chunked transfer)
    try:
        files, form = request.files, request.form
    except RequestEntityTooLarge as exc:
        raise too_large from exc
    file = files.get("file")
    if file is None:
        raise BadEvent("the form has no `file` field", hint="send the document as a form field named `file`")
    return Upload(file.filename or "", file.stream.read(limit + 1), form.get("collection") or "default",
                  split_groups(form.get("groups")))


class AskService:
    """Holds what outlives a request (keys, limiter); built lazily with the runtime on the first request."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        if settings.api_keys_file is None and settings.jwt_secret is None:
            raise ConfigError("the ask gateway has no credentials to check",
                              hint="set RAGFN_API_KEYS_FILE (sha256 of each key -> tenant, groups) or RAGFN_JWT_SECRET")
        keys = ApiKeys.from_file(settings.api_keys_file, jwt_secret=settings.jwt_secret,
                                 jwt_audience=settings.jwt_audience) if settings.api_keys_file else ApiKeys(
            {}, jwt_secret=settings.jwt_secret, jwt_audience=settings.jwt_audience)
        self.runtime, self.keys, self.uploads = runtime, keys, Uploads(runtime)
        self.limiter = None
        if runtime.redis is not None:
            from ragfn.ratelimit import RateLimiter

            self.limiter = RateLimiter(runtime.redis, limit=settings.rate_limit,
                                       window_seconds=settings.rate_window_seconds)

    def _identify(self, request: flask.Request, *, limited: bool = True) -> tuple[Identity, dict[str, str]]:
        """Who is calling (401 otherwise), within their rate limit (429); the rate-limit headers to answer with.

        `limited=False` for the cheap reads a chat repeats on its own (who am I, upload progress): polling them
        must not use up the questions a tenant may ask."""
        identity = self.keys.authenticate(request.headers)
        decision = self.limiter.enforce(identity.tenant) if self.limiter and limited else None
        return identity, self.limiter.headers(decision) if decision else {}

    def _admit(self, request: flask.Request, schema: type[BaseModel]):
        """Who is calling (401 otherwise), within their rate limit (429), with a valid body (400)."""
        identity, headers = self._identify(request)
        try:
            body = schema.model_validate(decode_json(request.get_data(cache=False)))
        except ValidationError as exc:
            raise BadEvent(f"invalid request: {problems(exc)}") from exc
        return identity, body, headers

    def me(self, request: flask.Request) -> flask.Response:
        """GET /v1/me: the caller's subject, tenant and groups, and what their tenant has indexed per collection."""
        identity, headers = self._identify(request, limited=False)
        return as_json(self.uploads.me(identity), headers)

    def upload(self, request: flask.Request) -> flask.Response:
        """POST /v1/documents (multipart: file, collection?, groups?): store the file and queue it; 202."""
        identity, headers = self._identify(request)
        upload = read_upload(request, self.runtime.settings.max_object_bytes)
        return as_json(asdict(self.uploads.upload(identity, upload)), headers, status=202)

    def upload_status(self, request: flask.Request) -> flask.Response:
        """GET /v1/documents/status?document_id=&version=&collection=: how far an upload has got."""
        identity, headers = self._identify(request, limited=False)
        args = request.args
        missing = [name for name in ("document_id", "version") if not args.get(name)]
        if missing:
            raise BadEvent(f"missing query parameter(s): {', '.join(missing)}",
                           hint="pass the document_id, version and collection that POST /v1/documents returned")
        query = StatusQuery(args["document_id"], args["version"], args.get("collection") or "default",
                            args.get("event_id") or None)
        return as_json(asdict(self.uploads.status(identity, query)), headers)

    def rate(self, request: flask.Request) -> flask.Response:
        """POST /v1/feedback {"answer_id", "rating": "up"|"down", "comment"?}: the caller's rating of an answer."""
        identity, rating, headers = self._admit(request, FeedbackRequest)
        if self.runtime.feedback is None:
            raise Unavailable("answer feedback is kept in Redis, and this gateway has none",
                              hint="set RAGFN_REDIS_URL")
        recorded = self.runtime.feedback.rate(rating.answer_id, identity.tenant, rating.rating, rating.comment)
        return flask.Response(json.dumps(recorded), mimetype="application/json", headers=headers)

    def respond(self, request: flask.Request) -> flask.Response:
        identity, ask, headers = self._admit(request, AskRequest)
        identity = authorize(identity)
        caller = Caller(identity.tenant, identity.groups)
        gateway = self.runtime.gateway
        parent = context_from_headers(request.headers)  # a UI or proxy that traces: the answer joins its trace
        if not ask.stream:
            return flask.Response(json.dumps(gateway.ask(ask, caller, parent=parent)), mimetype="application/json",
                                  headers=headers)
        events = gateway.stream(ask, caller, parent=parent)  # its span ends with the last event, not here

        def body() -> Iterator[str]:
            try:
                for name, data in events:
                    yield sse(name, data)
            except RagfnError as exc:  # headers are gone; the error travels as an event
                yield sse("error", exc.to_dict())
            finally:
                events.close()

        return flask.Response(flask.stream_with_context(body()), mimetype="text/event-stream",
                              headers=headers | {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def warmup(runtime: Runtime) -> flask.Response:
    """A chat opened, or the keep-alive PingSource fired: wake the predictor in the background, answer at once.

    No credentials needed: it reveals only whether the model is warm, and starts at most one warm-up at a time."""
    warmth = runtime.warmth
    if warmth is None:
        return flask.jsonify({"llm": runtime.llm.name, "state": "ready", "warming": False})
    warmth.ping()
    return flask.Response(json.dumps({"llm": runtime.settings.llm_url, **warmth.describe()}), status=202,
                          mimetype="application/json")


def ask_view():
    lazy = LazyRuntime("ragfn-ask")
    services: list[AskService] = []
    try:
        schedule = load_settings().keepalive_schedule
    except ConfigError:
        schedule = None  # the first request reports what is wrong with the settings
    if schedule:  # the laptop's keep-alive; in a cluster the PingSource in eventing/sources does this
        KeepAlive(schedule, lambda: warmup(lazy.get())).start()

    # GET answers the readiness probe on any other path; every other method is treated as POST, as it always was.
    gets = {"/v1/me": AskService.me, "/v1/documents/status": AskService.upload_status}
    posts = {"/v1/ask": AskService.respond, "": AskService.respond, "/v1/feedback": AskService.rate,
             "/v1/documents": AskService.upload}

    def view(request: flask.Request) -> flask.Response:
        path = request.path.rstrip("/")
        if path == "/v1/warmup":
            return guarded("ask", lambda: warmup(lazy.get()), lambda: None)
        route = gets.get(path) if request.method == "GET" else posts.get(path)
        if route is None and request.method == "GET":
            return flask.jsonify({"function": "ask", "ready": True})
        if route is None:
            return error_response(BadEvent(f"no route {request.path}", hint=ROUTES))

        def run() -> flask.Response:
            if not services:
                services.append(AskService(lazy.get()))
            return route(services[0], request)

        response = guarded("ask", run, lambda: None)
        if path == "/v1/documents":
            # functions-framework reads what is left of every body into memory before answering; a refused upload
            # may be gigabytes, so leave the rest to the WSGI server, which discards it unbuffered.
            request.stream = io.BytesIO()
        if response.status_code == 401:
            response.headers["WWW-Authenticate"] = Unauthorized.challenge
        return response

    return view
