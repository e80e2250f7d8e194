"""A local stand-in for the Knative Broker: routes by the Trigger YAML, retries with backoff, dead-letters.

POST / takes a CloudEvent (binary or structured) and answers 202; each matching Trigger's subscriber gets it
in binary mode. A reply event in the response goes back into the broker, as with Knative. A retryable answer
(404, 408, 409, 429, 5xx, or no answer) is retried `delivery.retry` times with the Trigger's backoff; what
still fails, or fails with another 4xx, goes to the dead-letter store. GET /status reports work in flight.

With an `issuer` (ragfn.eventing.dev_issuer), it does what Knative Eventing does with sender identity on: each
delivery to a Trigger with a `subscriber.audience` carries a token of the Trigger's identity for that audience, and
the ingress (events and replays) takes only tokens it issued for the Broker's own audience, as an EventPolicy on
the Broker admits only the namespace's sources.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

import flask
import httpx
from cloudevents.conversion import to_binary, to_dict
from cloudevents.http import CloudEvent, from_dict, from_http
from werkzeug.serving import make_server

from ragfn.core.auth import Unauthorized, bearer
from ragfn.core.errors import RagfnError, is_retryable_status
from ragfn.eventing.dead_letters import DeadLetterStore
from ragfn.eventing.delivery_auth import trigger_identity
from ragfn.eventing.dev_issuer import DevIssuer
from ragfn.eventing.triggers import Trigger

log = logging.getLogger("ragfn.broker")
MAX_EVENT_BYTES = 16 * 1024 * 1024  # as the functions take (ragfn.serve.handler.MAX_REQUEST_BYTES)


class LocalBroker:
    def __init__(self, triggers: list[Trigger], subscribers: Mapping[str, str], dead_letters: DeadLetterStore,
                 *, workers: int = 8, timeout: float = 120.0, issuer: DevIssuer | None = None,
                 audience: str | None = None) -> None:
        self.triggers = triggers
        self.issuer, self.audience = issuer, audience  # signs deliveries; the audience its ingress requires
        self.subscribers = dict(subscribers)  # Service name -> URL; URIs in Triggers are used as they are
        self.dead_letters = dead_letters
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="broker")
        self._client = httpx.Client(timeout=timeout)
        self._lock = threading.Lock()
        self._in_flight = 0
        self.delivered = 0
        self.dead_lettered = 0

    # -- ingress ---------------------------------------------------------------------------------------------

    def accept(self, event: CloudEvent) -> int:
        """Queue one delivery per matching Trigger; returns how many."""
        attributes = event.get_attributes()
        matched = [t for t in self.triggers if t.matches(attributes)]
        for trigger in matched:
            with self._lock:
                self._in_flight += 1
            self._pool.submit(self._deliver, trigger, event)
        if not matched:
            log.info("no trigger for %s (%s): dropped", attributes.get("type"), attributes.get("id"))
        return len(matched)

    def status(self) -> dict:
        with self._lock:
            return {"in_flight": self._in_flight, "delivered": self.delivered, "dead_lettered": self.dead_lettered}

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status()["in_flight"] == 0:
                return True
            time.sleep(0.05)
        return False

    # -- delivery ----------------------------------------------------------------------------------------------

    def _url(self, trigger: Trigger) -> str:
        if "://" in trigger.subscriber:
            return trigger.subscriber
        try:
            return self.subscribers[trigger.subscriber]
        except KeyError:
            return f"unresolved://{trigger.subscriber}"

    def _deliver(self, trigger: Trigger, event: CloudEvent) -> None:
        try:
            self._deliver_with_retries(trigger, event)
        except Exception:  # a broker thread must never die silently
            log.exception("delivery to %s failed unexpectedly", trigger.subscriber)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _deliver_with_retries(self, trigger: Trigger, event: CloudEvent) -> None:
        url = self._url(trigger)
        headers, body = to_binary(event)
        attempts, status, error = 0, None, ""
        while True:
            attempts += 1
            if self.issuer is not None and trigger.audience:  # per attempt: a retry late on needs a fresh token
                token = self.issuer.token(trigger_identity(trigger.name), trigger.audience)
                headers["Authorization"] = f"Bearer {token}"
            try:
                response = self._client.post(url, headers=headers, content=body)
                status, error = response.status_code, response.text[:2000]
            except httpx.HTTPError as exc:
                status, error, response = None, f"{type(exc).__name__}: {exc}", None
            if response is not None and 200 <= response.status_code < 300:
                with self._lock:
                    self.delivered += 1
                self._route_reply(response)
                return
            retryable = status is None or is_retryable_status(status)
            if not retryable or attempts > trigger.delivery.retry:
                break
            time.sleep(trigger.delivery.delay(attempts))
        letter = self.dead_letters.add(trigger=trigger.name, subscriber=url, status=status, error=error,
                                       attempts=attempts, event=to_dict(event))
        with self._lock:
            self.dead_lettered += 1
        log.warning("dead-lettered %s after %d attempt(s) to %s: %s %s (ragfn dlq show %s)",
                    event["type"], attempts, url, status, error[:200], letter.id)

    def _route_reply(self, response: httpx.Response) -> None:
        if "ce-specversion" not in response.headers and not response.headers.get("content-type", "").startswith(
                "application/cloudevents+json"):
            return
        try:
            reply = from_http(dict(response.headers), response.content)
        except Exception as exc:  # a malformed reply is the subscriber's bug; record it, keep routing
            log.error("malformed reply event: %s", exc)
            return
        self.accept(reply)

    def replay(self, letter_id: str) -> int:
        letter = self.dead_letters.get(letter_id)
        matched = self.accept(from_dict(self.dead_letters.original_event(letter)))
        self.dead_letters.remove(letter_id)
        return matched

    def admit(self, headers) -> None:
        """With an issuer and an audience: only a token this broker issued for its own audience gets in."""
        if self.issuer is None or self.audience is None:
            return
        import jwt

        token = bearer(headers)
        if not token:
            raise Unauthorized("missing token for the broker",
                               hint="send `Authorization: Bearer` with the token in the file that `ragfn dev` "
                                    "names as sink_token_file in RAGFN_HOME/dev.json")
        try:
            jwt.decode(token, self.issuer.public_key(), algorithms=["ES256"], audience=self.audience,
                       issuer=self.issuer.issuer, options={"require": ["exp", "iat", "aud", "iss", "sub"]})
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token for the broker: {exc}") from exc

    # -- HTTP ----------------------------------------------------------------------------------------------------

    def app(self) -> flask.Flask:
        app = flask.Flask("ragfn-broker")
        # Flask refuses a larger body (413) before reading it, or as soon as a chunked one passes the limit
        app.config["MAX_CONTENT_LENGTH"] = MAX_EVENT_BYTES
        app.register_error_handler(RagfnError, lambda exc: (flask.jsonify(exc.to_dict()), exc.status))

        @app.post("/", defaults={"path": ""})
        @app.post("/<path:path>")
        def ingress(path: str):
            self.admit(flask.request.headers)
            try:
                event = from_http(dict(flask.request.headers), flask.request.get_data())
            except Exception as exc:
                return flask.jsonify(error="BadEvent", message=f"not a CloudEvent: {exc}"), 400
            return flask.jsonify(accepted=self.accept(event)), 202

        if self.issuer is not None:
            @app.get("/.well-known/openid-configuration")
            def openid_configuration():
                return flask.jsonify(self.issuer.openid_configuration())

            @app.get("/openid/v1/jwks")
            def jwks():
                return flask.jsonify(self.issuer.jwks())

        @app.get("/status")
        def status():
            return flask.jsonify(self.status())

        @app.post("/dead-letters/<letter_id>/replay")
        def replay(letter_id: str):
            self.admit(flask.request.headers)
            return flask.jsonify(accepted=self.replay(letter_id))

        @app.get("/dead-letters")
        def dead_letters():  # the events' data: only for the broker's own senders
            self.admit(flask.request.headers)
            return flask.Response(json.dumps([letter.__dict__ for letter in self.dead_letters.list()]),
                                  mimetype="application/json")

        return app

    def serve(self, host: str, port: int):
        """A threaded HTTP server; the caller runs serve_forever() and shutdown()."""
        return make_server(host, port, self.app(), threaded=True)
