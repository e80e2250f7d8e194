"""The ask gateway as a Flask app: authentication, per-tenant rate limits, JSON or server-sent events; feedback,
uploads, and its OpenAPI document at GET /openapi.json (ragfn.serve.gateway_api).

Flask, not FastAPI: the gateway's work is synchronous (Redis, Chroma, httpx streams from the predictor) and runs on
gunicorn's threads like every other function, so streamed answers keep their WSGI semantics (a client that leaves
closes the generator, which cancels generation), and the error bodies and status codes stay ragfn's own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict

import flask
from opentelemetry import context as otel_context
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ragfn import __version__
from ragfn.core.auth import ApiKeys, Identity, Unauthorized, authorize
from ragfn.core.config import load_settings
from ragfn.core.errors import BadEvent, ConfigError, ObjectTooLarge, RagfnError, Unavailable, problems
from ragfn.core.telemetry import context_from_headers
from ragfn.gateway.ask import AskRequest
from ragfn.gateway.keepalive import KeepAlive
from ragfn.gateway.uploads import StatusQuery, Upload, Uploads, split_groups
from ragfn.retrieval.dense import Caller
from ragfn.serve.gateway_api import FeedbackRequest, openapi_document
from ragfn.serve.handler import LazyRuntime, decode_json, error_response, guarded, read_body
from ragfn.serve.runtime import Runtime
from ragfn.serve.wsgi import serve

FORM_ALLOWANCE = 64 * 1024  # multipart boundaries and part headers, and the small fields beside the file
MAX_JSON_BYTES = 64 * 1024  # a question (4,000 characters) or a rating (2,000), many times over
JSON_HINT = "send the question or rating as JSON of a few kilobytes"
ROUTES = "POST /v1/ask, /v1/feedback, /v1/documents or /v1/warmup; GET /v1/me or /v1/documents/status"


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
        runtime.gateway.sampler = runtime.answer_sampler  # the background judge's share of live answers, if set
        self.limiter = self.read_limiter = None
        if runtime.redis is not None:
            from ragfn.gateway.ratelimit import RateLimiter

            fail_open = settings.rate_limit_fail == "open"
            self.limiter = RateLimiter(runtime.redis, limit=settings.rate_limit,
                                       window_seconds=settings.rate_window_seconds, fail_open=fail_open)
            self.read_limiter = RateLimiter(runtime.redis, limit=settings.read_rate_limit, prefix="rl-read",
                                            window_seconds=settings.rate_window_seconds, fail_open=fail_open)

    def _identify(self, request: flask.Request, *, reads: bool = False) -> tuple[Identity, dict[str, str]]:
        """Who is calling (401 otherwise), within their rate limit (429); the rate-limit headers to answer with.

        `reads` for what a chat repeats on its own (who am I, upload progress): those have their own limit per
        caller, so polling does not use up the questions a tenant may ask, yet cannot make the gateway scan ledgers
        and dead letters without bound."""
        identity = self.keys.authenticate(request.headers)
        limiter = self.read_limiter if reads else self.limiter
        if limiter is None:
            return identity, {}
        decision = (limiter.enforce(f"{identity.tenant}/{identity.subject}", what="caller") if reads
                    else limiter.enforce(identity.tenant))
        return identity, limiter.headers(decision)

    def _admit(self, request: flask.Request, schema: type[BaseModel]):
        """Who is calling (401 otherwise), within their rate limit (429), with a valid body (400)."""
        identity, headers = self._identify(request)
        try:
            body = schema.model_validate(decode_json(read_body(request, MAX_JSON_BYTES,
                                                                          hint=JSON_HINT)))
        except ValidationError as exc:
            raise BadEvent(f"invalid request: {problems(exc)}") from exc
        return identity, body, headers

    def me(self, request: flask.Request) -> flask.Response:
        """GET /v1/me: the caller's subject, tenant and groups, and what their tenant has indexed per collection."""
        identity, headers = self._identify(request, reads=True)
        return as_json(self.uploads.me(identity), headers)

    def wake(self, request: flask.Request) -> flask.Response:
        """GET|POST /v1/warmup: wake the predictor (ragfn.serve.gateway_app.warmup), for a caller with credentials."""
        _, headers = self._identify(request, reads=True)
        response = warmup(self.runtime)
        response.headers.update(headers)
        return response

    def upload(self, request: flask.Request) -> flask.Response:
        """POST /v1/documents (multipart: file, collection?, groups?): store the file and queue it; 202."""
        identity, headers = self._identify(request)
        upload = read_upload(request, self.runtime.settings.max_object_bytes)
        return as_json(asdict(self.uploads.upload(identity, upload)), headers, status=202)

    def upload_status(self, request: flask.Request) -> flask.Response:
        """GET /v1/documents/status?document_id=&version=&collection=: how far an upload has got."""
        identity, headers = self._identify(request, reads=True)
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
    """A chat signed in, or the keep-alive timer fired: wake the predictor in the background, answer at once.

    Callers need credentials (the route is public, and a ping every few minutes from anyone would keep a GPU
    predictor from ever scaling to zero); the answer names the served model, never its URL."""
    warmth = runtime.warmth
    if warmth is None:
        return flask.jsonify({"llm": runtime.llm.name, "state": "ready", "warming": False})
    warmth.ping()
    return flask.Response(json.dumps({"llm": runtime.settings.llm_served_name, **warmth.describe()}),
                          status=202, mimetype="application/json")


def create_app() -> flask.Flask:
    """The gateway as a Flask app; its Runtime (and the keys, limiter) are built on the first request, not here."""
    app = flask.Flask("ragfn.ask", static_folder=None)
    app.url_map.merge_slashes = False  # "/v1//ask" is no route (a 400), not a redirect a POST cannot follow
    lazy = LazyRuntime("ragfn-ask")
    services: list[AskService] = []
    try:
        schedule = load_settings().keepalive_schedule
    except ConfigError:
        schedule = None  # the first request reports what is wrong with the settings
    if schedule:  # the laptop's keep-alive; in a cluster the PingSource in eventing/sources does this
        KeepAlive(schedule, lambda: warmup(lazy.get())).start()

    def service(route: Callable[[AskService, flask.Request], flask.Response]) -> Callable[[], flask.Response]:
        def view() -> flask.Response:
            def run() -> flask.Response:
                if not services:
                    services.append(AskService(lazy.get()))
                return route(services[0], flask.request)

            # a caller that traces (a UI, a proxy) gets what happens before the answer's span, such as the rate
            # limiter's Redis call, in its trace too
            token = otel_context.attach(context_from_headers(flask.request.headers))
            try:
                return guarded("ask", run, lambda: None)
            finally:
                otel_context.detach(token)

        view.__name__ = route.__name__
        return view

    for rule, methods, route in (("/v1/ask", ["POST"], AskService.respond), ("/", ["POST"], AskService.respond),
                                 ("/v1/feedback", ["POST"], AskService.rate),
                                 ("/v1/documents", ["POST"], AskService.upload),
                                 ("/v1/documents/status", ["GET"], AskService.upload_status),
                                 ("/v1/me", ["GET"], AskService.me),
                                 ("/v1/warmup", ["GET", "POST"], AskService.wake)):
        app.add_url_rule(rule, f"{route.__name__}:{rule}", service(route), methods=methods, strict_slashes=False,
                         provide_automatic_options=False)


    @app.get("/openapi.json", provide_automatic_options=False)
    def openapi() -> flask.Response:
        return flask.jsonify(openapi_document(__version__))

    @app.errorhandler(404)
    @app.errorhandler(405)
    def elsewhere(_: HTTPException) -> flask.Response:
        # Any other GET is the readiness probe (Knative's, and any load balancer's); anything else names the routes.
        if flask.request.method in ("GET", "HEAD"):
            return flask.jsonify({"function": "ask", "ready": True})
        return error_response(BadEvent(f"no route {flask.request.path}", hint=ROUTES))

    @app.after_request
    def challenge(response: flask.Response) -> flask.Response:
        if response.status_code == 401:
            response.headers["WWW-Authenticate"] = Unauthorized.challenge
        return response

    return app


def main(argv: list[str] | None = None, app: flask.Flask | None = None) -> None:
    """`python -m ragfn.serve.gateway_app --port 8080`: the gateway on gunicorn, as Knative and `ragfn dev` run it."""
    import argparse
    import os

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    args = parser.parse_args(argv)
    if app is None:
        preflight()
    serve(app or create_app(), args.host, args.port)


def preflight() -> None:
    """The settings, the index, and a judge URL's event sink, checked before serving: a revision deployed with a bad
    setting exits here and never turns ready (Knative keeps the last good one serving) instead of failing every
    request. A store that is merely down now is logged: that is the degradation table's case, not a setting's."""
    try:
        runtime = Runtime(load_settings())
        runtime.answer_sampler  # noqa: B018 - built for its checks
        try:  # the store's settings (uploads' status and /v1/me read the index); embedded Chroma opens lazily
            if runtime.settings.store != "chroma" or runtime.settings.chroma_url:
                runtime.index.warm_up()
        except Unavailable as exc:  # a store that is down now (not misconfigured) is the degradation table's case
            logging.getLogger("ragfn.gateway").warning("the index is unavailable at start-up: %s", exc)
    except ConfigError as exc:
        raise SystemExit(f"ragfn-ask cannot start: {exc}") from exc


if __name__ == "__main__":
    main()
