"""The local broker over real HTTP: trigger routing, replies, retries with backoff, dead letters, replay."""

from __future__ import annotations

import threading
import time

import flask
import httpx
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http
from werkzeug.serving import make_server

from ragfn.eventing.broker import LocalBroker
from ragfn.eventing.dead_letters import DeadLetterStore
from ragfn.eventing.triggers import Delivery, Trigger, parse_duration

pytestmark = pytest.mark.integration


class Subscriber:
    """A real HTTP subscriber whose answers are scripted: a list of statuses, then 200."""

    def __init__(self, statuses: list[int] | None = None, reply_type: str | None = None) -> None:
        self.statuses = list(statuses or [])
        self.reply_type = reply_type
        self.received: list[tuple[float, CloudEvent]] = []
        app = flask.Flask("subscriber")

        @app.post("/")
        def receive():
            event = from_http(dict(flask.request.headers), flask.request.get_data())
            self.received.append((time.monotonic(), event))
            if self.statuses:
                return flask.jsonify(error="scripted"), self.statuses.pop(0)
            if self.reply_type:
                headers, body = to_binary(CloudEvent({"type": self.reply_type, "source": "sub"}, {"n": 1}))
                return flask.Response(body, headers=dict(headers))
            return "", 204

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def trigger(name: str, event_type: str, subscriber: str, retry: int = 2, delay: float = 0.05) -> Trigger:
    return Trigger(name=name, subscriber=subscriber, filter={"type": event_type}, filters=(),
                   delivery=Delivery(retry=retry, backoff_delay=delay, dead_letter_sink="ragfn-dead-letter"))


@pytest.fixture
def served(tmp_path):
    started = []

    def serve(triggers, subscribers=None):
        broker = LocalBroker(triggers, subscribers or {}, DeadLetterStore(tmp_path / "dlq"))
        server = broker.serve("127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return broker, f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server in started:
        server.shutdown()


def send(url: str, event_type: str, data=None) -> httpx.Response:
    headers, body = to_binary(CloudEvent({"type": event_type, "source": "test"}, data or {"x": 1}))
    return httpx.post(url, headers=headers, content=body)


def test_routes_by_type_and_follows_replies(served):
    first, second = Subscriber(reply_type="t.second"), Subscriber()
    broker, url = served([trigger("a", "t.first", "svc-a"), trigger("b", "t.second", second.url)],
                         {"svc-a": first.url})
    assert send(url, "t.first").json() == {"accepted": 1}
    assert send(url, "t.unrouted").json() == {"accepted": 0}
    assert broker.wait_idle(10)
    assert [e["type"] for _, e in first.received] == ["t.first"]
    assert [e["type"] for _, e in second.received] == ["t.second"]  # the reply was routed on
    first.close(), second.close()


def test_retries_with_exponential_backoff_then_succeeds(served):
    flaky = Subscriber([503, 429])
    broker, url = served([trigger("f", "t", flaky.url, retry=3, delay=0.1)])
    send(url, "t")
    assert broker.wait_idle(10)
    times = [t for t, _ in flaky.received]
    assert len(times) == 3 and broker.dead_letters.list() == []
    assert times[1] - times[0] >= 0.1 and times[2] - times[1] >= 0.2  # 0.1 * 2^0, 0.1 * 2^1
    flaky.close()


def test_permanent_failure_is_dead_lettered_at_once_and_replayable(served):
    picky = Subscriber([400])
    broker, url = served([trigger("p", "t", picky.url, retry=5)])
    send(url, "t", {"payload": "kept"})
    assert broker.wait_idle(10)
    assert len(picky.received) == 1  # 400 is not retried
    (letter,) = broker.dead_letters.list()
    assert letter.status == 400 and letter.attempts == 1 and "scripted" in letter.error
    assert letter.event["data"] == {"payload": "kept"} and letter.event["knativeerrorcode"] == "400"
    assert httpx.get(f"{url}/dead-letters").json()[0]["id"] == letter.id
    assert httpx.post(f"{url}/dead-letters/{letter.id}/replay").json() == {"accepted": 1}
    assert broker.wait_idle(10)
    assert len(picky.received) == 2 and broker.dead_letters.list() == []
    assert httpx.post(f"{url}/dead-letters/nope/replay").status_code == 400
    picky.close()


def test_exhausted_retries_and_unreachable_subscribers_are_dead_lettered(served):
    down = Subscriber([500, 500, 500])
    broker, url = served([trigger("d", "t", down.url, retry=2, delay=0.01),
                          trigger("gone", "t", "http://127.0.0.1:9/", retry=1, delay=0.01)])
    send(url, "t")
    assert broker.wait_idle(10)
    letters = {letter.trigger: letter for letter in broker.dead_letters.list()}
    assert letters["d"].attempts == 3 and letters["d"].status == 500
    assert letters["gone"].status is None and "Connect" in letters["gone"].error
    down.close()


def test_ingress_rejects_non_cloudevents(served):
    _, url = served([trigger("x", "t", "http://127.0.0.1:9/")])
    response = httpx.post(url, content=b"not an event")
    assert response.status_code == 400 and "not a CloudEvent" in response.json()["message"]


def test_iso_durations():
    assert parse_duration("PT0.5S") == 0.5 and parse_duration("PT1M30S") == 90 and parse_duration("PT2H") == 7200
    with pytest.raises(Exception, match="ISO-8601"):
        parse_duration("5s")
