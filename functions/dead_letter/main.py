"""dead-letter: the Broker's and Triggers' deadLetterSink; keeps each event Knative gave up on, with why."""

# Letters go to the Redis stream {RAGFN_CACHE_PREFIX}:dlq when RAGFN_REDIS_URL is set (what `ragfn dlq` and the
# gateway's upload status read), else to files under RAGFN_HOME. Any event type is kept; 503 while Redis is down, so
# the broker tries again. With RAGFN_EVENT_AUDIENCE set, only the Triggers' identities may deliver
# (ragfn.eventing.delivery_auth), checked before the body is read.

import flask
import functions_framework

from ragfn.core.config import load_settings
from ragfn.eventing.dead_letters import open_dead_letters, receive
from ragfn.eventing.delivery_auth import DeliveryVerifier
from ragfn.serve.handler import MAX_REQUEST_BYTES, guarded, read_body, unbuffered

_state = []  # (letters, delivery verifier), built on the first request, never at import


def _letters_and_verifier():
    if not _state:
        settings = load_settings()
        _state.append((open_dead_letters(settings), DeliveryVerifier.from_settings(settings)))
    return _state[0]


def _ready() -> flask.Response:
    _letters_and_verifier()
    return flask.jsonify({"function": "dead-letter", "ready": True})


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    if request.method == "GET":  # readiness probe: a delivery audience without its senders keeps it unready
        return unbuffered(guarded("dead-letter", _ready, lambda: None))

    def keep() -> flask.Response:
        letters, verifier = _letters_and_verifier()
        if verifier is not None:
            verifier.verify(request.headers)
        body = read_body(request, MAX_REQUEST_BYTES, hint="a dead letter is the event the Broker could not deliver")
        letter = receive(request.headers, body, letters)
        return flask.jsonify({"stored": letter.id, "type": letter.event.get("type"), "trigger": letter.trigger})

    return unbuffered(guarded("dead-letter", keep, lambda: None))
