"""dead-letter: the Broker's and Triggers' deadLetterSink; keeps each event Knative gave up on, with why."""

# Letters go to the Redis stream {RAGFN_CACHE_PREFIX}:dlq when RAGFN_REDIS_URL is set (what `ragfn dlq` and the
# gateway's upload status read), else to files under RAGFN_HOME. Any event type is kept; 503 while Redis is down, so
# the broker tries again.

import flask
import functions_framework

from ragfn.core.config import load_settings
from ragfn.eventing.dead_letters import open_dead_letters, receive
from ragfn.serve.handler import MAX_REQUEST_BYTES, guarded, read_body, unbuffered

_store = []  # built on the first request, never at import


def _letters():
    if not _store:
        _store.append(open_dead_letters(load_settings()))
    return _store[0]


@functions_framework.http
def handle(request: flask.Request) -> flask.Response:
    if request.method == "GET":  # readiness probe
        return unbuffered(flask.jsonify({"function": "dead-letter", "ready": True}))

    def keep() -> flask.Response:
        body = read_body(request, MAX_REQUEST_BYTES, hint="a dead letter is the event the Broker could not deliver")
        letter = receive(request.headers, body, _letters())
        return flask.jsonify({"stored": letter.id, "type": letter.event.get("type"), "trigger": letter.trigger})

    return unbuffered(guarded("dead-letter", keep, lambda: None))
