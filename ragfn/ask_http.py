"""The ask gateway over HTTP: authentication, per-tenant rate limits, JSON or server-sent events; answer feedback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Literal

import flask
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragfn.auth import ApiKeys, Unauthorized, authorize
from ragfn.config import load_settings
from ragfn.errors import BadEvent, ConfigError, RagfnError, Unavailable, problems
from ragfn.gateway import AskRequest
from ragfn.handler import LazyRuntime, decode_json, error_response, guarded
from ragfn.keepalive import KeepAlive
from ragfn.runtime import Runtime
from ragfn.search import Caller
from ragfn.telemetry import context_from_headers


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    answer_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="the answer_id of the answer's final record")
    rating: Literal["up", "down"]
    comment: str = Field("", max_length=2000)


def sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


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
        self.runtime, self.keys = runtime, keys
        self.limiter = None
        if runtime.redis is not None:
            from ragfn.ratelimit import RateLimiter

            self.limiter = RateLimiter(runtime.redis, limit=settings.rate_limit,
                                       window_seconds=settings.rate_window_seconds)

    def _admit(self, request: flask.Request, schema: type[BaseModel]):
        """Who is calling (401 otherwise), within their rate limit (429), with a valid body (400)."""
        identity = self.keys.authenticate(request.headers)
        decision = self.limiter.enforce(identity.tenant) if self.limiter else None
        try:
            body = schema.model_validate(decode_json(request.get_data(cache=False)))
        except ValidationError as exc:
            raise BadEvent(f"invalid request: {problems(exc)}") from exc
        return identity, body, self.limiter.headers(decision) if decision else {}

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

    def view(request: flask.Request) -> flask.Response:
        if request.path.rstrip("/") == "/v1/warmup":
            return guarded("ask", lambda: warmup(lazy.get()), lambda: None)
        if request.method == "GET":
            return flask.jsonify({"function": "ask", "ready": True})
        path = request.path.rstrip("/")
        if path not in ("/v1/ask", "/v1/feedback", ""):
            return error_response(BadEvent(f"no route {request.path}", hint="POST /v1/ask, /v1/feedback or /v1/warmup"))

        def run() -> flask.Response:
            if not services:
                services.append(AskService(lazy.get()))
            return services[0].rate(request) if path == "/v1/feedback" else services[0].respond(request)

        response = guarded("ask", run, lambda: None)
        if response.status_code == 401:
            response.headers["WWW-Authenticate"] = Unauthorized.challenge
        return response

    return view
