"""The background judge: the gateway samples live answers as answer.sampled CloudEvents, and functions/judge scores
them with a judge model and serves the scores as Prometheus metrics.

The judge models here: tests/chat_server.py's "word-judge", a stand-in for a capable judge model (none runs here)
that scores the case it is sent by shared words, and SmolLM2 on the real llama.cpp predictor for the plumbing.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import flask
import jsonschema
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from functions_framework import create_app
from prometheus_client.parser import text_string_to_metric_families

from chat_server import API_KEY
from conftest import REDIS_URL, EventSink, Served, ask
from ragfn.eventing import events
from ragfn.eventing.events import AnswerSampled
from ragfn.eventing.publish import HttpPublisher
from ragfn.gateway.sampling import AnswerSampler, answer_sample
from ragfn.retrieval.context import Passage

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent
PASSAGE = "To sort a list in place, call list.sort(). The sorted() built-in returns a new sorted list."


def sample(answer: str, *, model: str = "smollm", provider: str = "primary", **extra) -> dict:
    return {"answer_id": "a" * 32, "question": "How do I sort a list in place?", "answer": answer,
            "passages": [{"n": 1, "text": PASSAGE}], "model": model, "provider": provider,
            "collection": "default", "prompt_version": "v2"} | extra


def post(client, data: dict, event_type: str = events.ANSWER_SAMPLED):
    headers, body = to_binary(CloudEvent({"type": event_type, "source": "test"}, data))
    return client.post("/", headers=dict(headers), data=body)


def metrics(client) -> dict[tuple[str, tuple], float]:
    """Every sample the function's /metrics serves, keyed by (name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.content_type.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.get_data(as_text=True)) for s in family.samples}


def outcome(found: dict, name: str) -> float:
    return found[("ragfn_judge_samples_total", (("outcome", name),))]


@pytest.fixture
def judge_client(ragfn_env, monkeypatch, chat_server):
    monkeypatch.setenv("RAGFN_JUDGE_URL", chat_server.base_url)
    monkeypatch.setenv("RAGFN_JUDGE_SERVED_NAME", "word-judge")
    monkeypatch.setenv("RAGFN_JUDGE_API_KEY", API_KEY)
    return create_app(target="handle", source=str(REPO / "functions" / "judge" / "main.py"),
                      signature_type="http").test_client()


def test_the_judge_function_serves_its_scores_as_prometheus_metrics(judge_client):
    before = metrics(judge_client)
    assert all(outcome(before, name) == 0 for name in ("scored", "unparsed", "judge-unavailable", "judge-rejected"))
    grounded = post(judge_client, sample("Call list.sort() to sort a list in place [1]."))
    assert grounded.status_code == 200, grounded.get_data(as_text=True)
    assert grounded.get_json() | {"reason": ""} == {"answer_id": "a" * 32, "outcome": "scored", "rubric": "j1",
                                                     "relevance": 1.0, "groundedness": 1.0, "reason": ""}
    invented = post(judge_client, sample("Use the qsort function from the C library with a comparator pointer."))
    assert invented.get_json()["groundedness"] == 0.0
    found = metrics(judge_client)
    labels = (("model", "smollm"), ("provider", "primary"))
    assert found[("ragfn_answer_groundedness_count", labels)] == 2
    assert found[("ragfn_answer_groundedness_sum", labels)] == 1.0
    assert found[("ragfn_answer_groundedness_bucket", (("le", "0.25"),) + labels)] == 1  # the invented one
    assert found[("ragfn_answer_relevance_count", labels)] == 2
    assert outcome(found, "scored") == 2 and found[("ragfn_judge_seconds_count", ())] == 2


def test_senders_cannot_grow_the_metrics_series_without_bound(judge_client):
    from ragfn.llm.background_judge import MAX_MODELS

    for i in range(MAX_MODELS + 5):
        assert post(judge_client, sample("Call list.sort() [1].", model=f"model-{i}")).status_code == 200
    models = {dict(labels).get("model") for name, labels in metrics(judge_client)
              if name == "ragfn_answer_groundedness_count"}
    assert len(models) == MAX_MODELS + 1 and "other" in models and "model-0" in models


def test_a_judge_that_is_down_or_refuses_costs_the_sample_not_a_retry(judge_client, monkeypatch):
    monkeypatch.setenv("RAGFN_JUDGE_API_KEY", "sk-wrong")  # read when the function's runtime is built: first request
    refused = post(judge_client, sample("Call list.sort() [1]."))
    assert refused.status_code == 200 and refused.get_json()["outcome"] == "judge-rejected"
    assert "401" in refused.get_json()["error"] and "sk-wrong" not in refused.get_data(as_text=True)
    found = metrics(judge_client)
    assert outcome(found, "judge-rejected") == 1 and outcome(found, "scored") == 0
    assert not any(name.startswith("ragfn_answer_groundedness_count") for name, _ in found)


def test_a_judge_that_is_down_is_counted(ragfn_env, monkeypatch):
    monkeypatch.setenv("RAGFN_JUDGE_URL", "http://127.0.0.1:9/v1")
    client = create_app(target="handle", source=str(REPO / "functions" / "judge" / "main.py"),
                        signature_type="http").test_client()
    response = post(client, sample("Call list.sort() [1]."))
    assert response.status_code == 200 and response.get_json()["outcome"] == "judge-unavailable"
    assert outcome(metrics(client), "judge-unavailable") == 1


@pytest.mark.parametrize("data, field", [
    (sample("x", model="smol lm {evil=\"1\"}"), "model"),  # a metric label: no spaces, braces or quotes
    (sample("x", provider="anyone"), "provider"),
    (sample("x", answer_id="../etc"), "answer_id"),
    (sample("x", passages=[{"n": i + 1, "text": "p"} for i in range(13)]), "passages"),
    (sample("x" * 8001), "answer"),
    (sample("x", tenant="acme"), "tenant"),  # samples carry no tenant
])
def test_malformed_samples_are_refused_naming_the_field(judge_client, data, field):
    response = post(judge_client, data)
    assert response.status_code == 400 and field in response.get_json()["message"]
    assert outcome(metrics(judge_client), "scored") == 0


def test_the_judge_function_refuses_other_event_types(judge_client):
    response = post(judge_client, {"uri": "file:///x"}, events.DOCUMENT_UPSERTED)
    assert response.status_code == 400 and events.ANSWER_SAMPLED in response.get_json()["hint"]


def test_without_a_judge_url_the_function_counts_the_sample_and_says_what_to_set(ragfn_env, monkeypatch):
    monkeypatch.delenv("RAGFN_JUDGE_URL", raising=False)
    client = create_app(target="handle", source=str(REPO / "functions" / "judge" / "main.py"),
                        signature_type="http").test_client()
    response = post(client, sample("Call list.sort() [1]."))
    assert response.status_code == 200 and response.get_json()["outcome"] == "judge-unconfigured"
    assert "RAGFN_JUDGE_URL" in response.get_json()["error"]
    assert outcome(metrics(client), "judge-unconfigured") == 1


def test_the_llamacpp_predictor_judges_a_sample_through_the_function(ragfn_env, monkeypatch, predictor):
    # SmolLM2 is a poor judge: its reply may hold no verdict, which is counted as unparsed, never guessed
    monkeypatch.setenv("RAGFN_JUDGE_URL", predictor.base_url)
    monkeypatch.setenv("RAGFN_JUDGE_SERVED_NAME", "smollm")
    monkeypatch.setenv("RAGFN_JUDGE_TIMEOUT_SECONDS", "110")  # the most it may be: a 2-core machine, shared
    client = create_app(target="handle", source=str(REPO / "functions" / "judge" / "main.py"),
                        signature_type="http").test_client()
    response = post(client, sample("Call list.sort() to sort a list in place [1]."))
    assert response.status_code == 200 and response.get_json()["outcome"] in ("scored", "unparsed")
    found = metrics(client)
    assert outcome(found, "scored") + outcome(found, "unparsed") == 1 and found[("ragfn_judge_seconds_count", ())] == 1
    scored = found.get(("ragfn_answer_groundedness_count", (("model", "smollm"), ("provider", "primary"))), 0)
    assert scored == outcome(found, "scored")


# -- the gateway's sampler ---------------------------------------------------------------------------------------

def sampled(sink: EventSink) -> list[dict]:
    return [event.get_data() for event in sink.received if event["type"] == events.ANSWER_SAMPLED]


def test_the_gateway_sends_the_answer_shown_to_the_judge(gateway, event_sink):
    client, _ = gateway
    app = client(RAGFN_JUDGE_URL="http://judge.invalid/v1", RAGFN_JUDGE_SAMPLE_RATE="1", RAGFN_REDIS_URL=REDIS_URL)
    first = ask(app, "How do I sort a list?")
    assert first.status_code == 200
    answer = first.get_json()
    assert wait_for(lambda: len(sampled(event_sink)) == 1)
    data = sampled(event_sink)[0]
    schema = json.loads((REPO / "eventing" / "schemas" / f"{events.ANSWER_SAMPLED}.schema.json").read_text())
    jsonschema.validate(data, schema)
    assert data["answer_id"] == answer["answer_id"] and data["answer"] == answer["answer"]
    assert data["model"] == "extractive" and data["provider"] == "extractive" and data["degraded"] is None
    assert data["passages"][0]["n"] == 1 and "list.sort()" in data["passages"][0]["text"]
    assert "acme" not in json.dumps(data)  # no tenant, no groups
    repeat = ask(app, "How do I sort a list?")
    assert repeat.get_json()["cache"] == "hit"
    streamed = app.post("/v1/ask", json={"question": "What does sorted() return?", "stream": True},
                        headers={"Authorization": "Bearer key-acme"})
    assert streamed.status_code == 200 and "event: final" in streamed.get_data(as_text=True)  # runs the stream
    assert wait_for(lambda: len(sampled(event_sink)) == 2)
    assert sampled(event_sink)[1]["question"] == "What does sorted() return?"  # the hit was not sampled again


def wait_for(condition, timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.parametrize("env", [{"RAGFN_JUDGE_SAMPLE_RATE": "1"},  # no judge URL: off
                                 {"RAGFN_JUDGE_URL": "http://judge.invalid/v1", "RAGFN_JUDGE_SAMPLE_RATE": "0"}])
def test_the_gateway_samples_nothing_unless_a_judge_url_and_a_rate_are_set(gateway, event_sink, env, monkeypatch):
    monkeypatch.delenv("RAGFN_JUDGE_URL", raising=False)
    client, _ = gateway
    app = client(**env)
    assert ask(app, "How do I sort a list?").status_code == 200
    assert not wait_for(lambda: sampled(event_sink), timeout=1.0)


def test_a_judge_url_without_an_event_sink_is_a_clear_error(gateway, monkeypatch):
    monkeypatch.delenv("K_SINK", raising=False)
    monkeypatch.delenv("RAGFN_SINK", raising=False)
    client, _ = gateway
    app = client(RAGFN_JUDGE_URL="http://judge.invalid/v1")
    response = ask(app, "How do I sort a list?")
    assert response.status_code == 500 and "K_SINK" in response.get_json()["hint"]


@pytest.mark.parametrize("env, named", [
    ({"RAGFN_JUDGE_URL": "http://judge.invalid/v1"}, "K_SINK"),  # a judge URL with no sink to send samples to
    ({"RAGFN_JUDGE_URL": "judge.invalid"}, "RAGFN_JUDGE_URL"),
    ({"RAGFN_JUDGE_SAMPLE_RATE": "5%"}, "judge_sample_rate"),
])
def test_the_gateway_refuses_to_start_with_bad_judge_settings(ragfn_env, env, named):
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("K_SINK", "RAGFN_SINK", "RAGFN_JUDGE_URL")}
    done = subprocess.run([sys.executable, "-m", "ragfn.serve.gateway_app", "--port", "9"], env=clean | env,
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode != 0 and "ragfn-ask cannot start" in done.stderr and named in done.stderr


class BlockedSink(Served):
    """A sink that holds every request until `release` is set: a broker that stopped answering."""

    def __init__(self) -> None:
        self.release, self.arrived = threading.Event(), threading.Event()
        app = flask.Flask("blocked")

        @app.post("/")
        def receive():
            self.arrived.set()
            self.release.wait(30)
            return "", 202

        super().__init__(app)


def test_a_stuck_broker_neither_holds_answers_nor_grows_memory():
    sink = BlockedSink()
    try:
        sampler = AnswerSampler(HttpPublisher(sink.url, timeout=30), 1.0, backlog=2)
        build = lambda: answer_sample("b" * 32, "q?", "an answer", [Passage(1, "c", "s", "", 0, 1, PASSAGE, 1.0)],  # noqa: E731
                                      model="smollm", provider="primary", collection="default", prompt_version="v2",
                                      degraded=None)
        assert sampler.offer(build)  # taken by the worker, which now waits on the sink
        assert sink.arrived.wait(10)
        accepted = [sampler.offer(build) for _ in range(5)]  # each returns at once: offer never waits
        assert accepted == [True, True, False, False, False] and sampler.dropped == 3
        sink.release.set()
        assert sampler.drain(10) and sampler.sent == 3 and sampler.failed == 0
    finally:
        sink.release.set()
        sink.server.shutdown()


def test_a_broker_that_is_down_or_a_bad_sample_never_reaches_the_answer():
    sampler = AnswerSampler(HttpPublisher("http://127.0.0.1:9/", timeout=2), 1.0)
    passages = [Passage(1, "c", "s", "", 0, 1, PASSAGE, 1.0)]
    assert sampler.offer(lambda: answer_sample("c" * 32, "q?", "a", passages, model="smollm", provider="primary",
                                               collection="default", prompt_version="v2", degraded=None))
    assert sampler.drain(10) and sampler.failed == 1 and sampler.sent == 0
    # a served name that is no metric label: not sampled, and nothing raised into the answer
    assert not sampler.offer(lambda: answer_sample("d" * 32, "q?", "a", passages, model="my model", provider="primary",
                                                   collection="default", prompt_version="v2", degraded=None))
    assert sampler.failed == 2

    def broken() -> AnswerSampled:
        raise KeyError("no request")  # any bug in building a sample

    assert not sampler.offer(broken) and sampler.failed == 3


def test_samples_are_cut_to_the_events_bounds():
    long = [Passage(i + 1, "c", "s", "", 0, 1, "word " * 1000, 1.0) for i in range(20)]
    data = answer_sample("e" * 32, "q?", "x" * 20000, long, model="m", provider="fallback", collection="c",
                         prompt_version="v2", degraded="ungrounded-answer")
    assert len(data.answer) == 8000 and len(data.passages) == 12 and all(len(p.text) == 2000 for p in data.passages)
    assert AnswerSampled.model_validate(data.model_dump()) == data


def test_the_dashboard_shows_the_judges_metrics_by_the_names_it_serves():
    from ragfn.llm.background_judge import JudgeMetrics

    dashboard = json.loads((REPO / "manifests/components/observability/grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    judge = JudgeMetrics()
    judge.relevance.labels("m", "primary").observe(1.0)
    judge.groundedness.labels("m", "primary").observe(1.0)
    from prometheus_client import generate_latest

    served = {s.name for f in text_string_to_metric_families(generate_latest(judge.registry).decode())
              for s in f.samples}
    wanted = {"ragfn_answer_groundedness_sum", "ragfn_answer_groundedness_count", "ragfn_answer_groundedness_bucket",
              "ragfn_answer_relevance_sum", "ragfn_answer_relevance_count", "ragfn_judge_samples_total"}
    assert wanted <= served
    for name in wanted:
        assert any(name in expr for expr in exprs), f"no dashboard panel reads {name}"
    cells = set()
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in cells, f"panel {panel['title']!r} overlaps another"
                cells.add((x, y))

