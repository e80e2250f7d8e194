"""Cold starts and keep-alive: the gateway with the predictor down, then up; warm-up pings; the keep-alive timer."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import PredictorProcess, ask, free_port_block, llamacpp_env
from test_predictor import metric

from ragfn.core.errors import ConfigError
from ragfn.gateway.attribution import attribute
from ragfn.gateway.keepalive import KeepAlive, parse_schedule
from ragfn.llm.client import citations, parse_messages

REPO = Path(__file__).resolve().parent.parent
QUESTION = "How do I sort a list?"


def events(response) -> list[tuple[str, object]]:
    blocks = response.get_data(as_text=True).strip().split("\n\n")
    return [(name.removeprefix("event: "), json.loads(data.removeprefix("data: ")))
            for name, data in (block.split("\n", 1) for block in blocks)]


@pytest.mark.integration
def test_the_gateway_answers_while_the_predictor_is_down_and_uses_it_once_up(gateway, gguf_model, tmp_path):
    client, _ = gateway
    predictor = PredictorProcess(tmp_path, llamacpp_env(gguf_model), port=free_port_block(1))
    # the gate off: once warm, the answer must be the model's own, which the gate may replace (test_gate.py)
    app = client(RAGFN_LLM_URL=predictor.base_url, RAGFN_LLM_SERVED_NAME="smollm", RAGFN_LLM_COLD_WAIT_SECONDS="0.3",
                 RAGFN_ANSWER_GATE="false")
    try:
        cold = events(ask(app, QUESTION, stream=True))
        assert cold[0] == ("status", {"degraded": "cold-start",
                                      "message": "the model is warming up; answering from the passages meanwhile"})
        assert cold[-1][0] == "final" and cold[-1][1]["degraded"] == "cold-start"
        assert "[1]" in "".join(data for name, data in cold if name == "token")  # the extractive answer cites
        assert ask(app, QUESTION).get_json()["degraded"] == "cold-start"  # and is not cached as if it were whole

        predictor.start()  # the gateway's background warm-up notices it on its own
        deadline = time.monotonic() + 30
        while True:
            generated = finished(predictor.base_url)
            if (warm := events(ask(app, QUESTION, stream=True)))[-1][1]["degraded"] is None:
                break
            assert time.monotonic() < deadline, predictor.log()
            time.sleep(0.3)
        assert [name for name, _ in warm][-2:] == ["citations", "final"] and "status" not in dict(warm)
        tokens = [data for name, data in warm if name == "token"]
        # the model wrote it: the predictor finished one generation for it, streamed through piece by piece
        assert finished(predictor.base_url) == generated + 1 and len(tokens) > 3
        assert "".join(tokens) != "".join(data for name, data in cold if name == "token")
        passages = parse_messages(_prompt())[1]  # its [n] are mapped to the numbered passages' sources
        cited = citations("".join(tokens), passages) or attribute("".join(tokens), passages)  # the model's, or inferred
        assert [c["n"] for c in dict(warm)["citations"]] == [p.number for p in cited]
        assert dict(warm)["final"]["citations_inferred"] == (not citations("".join(tokens), passages) and bool(cited))
    finally:
        predictor.stop()


def finished(base_url: str) -> float:
    return sum(metric(base_url, "ragfn_predictor_requests_total", outcome=o) for o in ("stop", "length"))


def _prompt() -> list[dict]:
    """The messages the gateway sends for QUESTION: rebuilt from what it retrieves (the same runtime settings)."""
    from ragfn.core.config import load_settings
    from ragfn.gateway.ask import AskRequest
    from ragfn.retrieval.dense import Caller
    from ragfn.serve.runtime import Runtime

    runtime = Runtime(load_settings())
    prepared = runtime.gateway.prepare(AskRequest(question=QUESTION, top_k=8), Caller("acme", ("eng",)))
    return prepared.messages


SIGNED_IN = {"Authorization": "Bearer key-acme"}


@pytest.mark.integration
def test_a_warmup_ping_wakes_the_predictor_without_waiting(gateway, gguf_model, tmp_path):
    client, _ = gateway
    predictor = PredictorProcess(tmp_path, llamacpp_env(gguf_model), port=free_port_block(1))
    app = client(RAGFN_LLM_URL=predictor.base_url, RAGFN_LLM_SERVED_NAME="smollm")
    try:
        started = time.monotonic()
        answer = app.post("/v1/warmup", headers=SIGNED_IN)  # what the chat UI sends when a user signs in
        assert answer.status_code == 202 and time.monotonic() - started < 1
        assert answer.get_json()["warming"] is True
        assert app.post("/v1/warmup", headers=SIGNED_IN).get_json()["warming"] is True  # one warm-up at a time
        predictor.start()
        deadline = time.monotonic() + 30
        while app.get("/v1/warmup", headers=SIGNED_IN).get_json()["state"] != "ready":
            assert time.monotonic() < deadline, predictor.log()
            time.sleep(0.2)
        answer = ask(app, QUESTION, max_tokens=32).get_json()  # short: on a loaded machine 256 tokens can take 30 s
        # the warm model answered (the gate then judged what it wrote; at 32 tokens it may well refuse a cut-off)
        assert answer["degraded"] in (None, "ungrounded-answer") and answer["gate"] is not None, answer
    finally:
        predictor.stop()


@pytest.mark.integration
def test_a_prompt_over_the_models_context_is_answered_extractively(gateway, gguf_model, tmp_path):
    client, _ = gateway
    predictor = PredictorProcess(tmp_path, llamacpp_env(gguf_model, RAGFN_LLM_CONTEXT_TOKENS="128")).start()
    try:
        refused = httpx.post(f"{predictor.base_url}/chat/completions", timeout=30,
                             json={"messages": [{"role": "user", "content": "word " * 400}]})
        assert refused.status_code == 400 and "does not fit" in refused.json()["error"]["message"]
        app = client(RAGFN_LLM_URL=predictor.base_url, RAGFN_LLM_SERVED_NAME="smollm")
        answer = events(ask(app, QUESTION, stream=True))
        assert answer[0][0] == "status" and answer[0][1]["degraded"] == "llm-rejected"
        assert "does not fit" in answer[0][1]["message"] and answer[-1][1]["degraded"] == "llm-rejected"
        assert "[1]" in "".join(data for name, data in answer if name == "token")
    finally:
        predictor.stop()


@pytest.mark.integration
def test_warmup_without_a_predictor_reports_the_in_process_engine(gateway):
    client, _ = gateway
    body = client().post("/v1/warmup", headers=SIGNED_IN).get_json()
    assert body == {"llm": "extractive", "state": "ready", "warming": False}


@pytest.mark.unit
def test_the_keepalive_timer_pings_at_the_scheduled_times():
    pings: list[float] = []
    # a clock 0.3 s before the top of a minute, so "every minute" fires once, 0.3 s from now
    base = datetime(2026, 11, 23, 9, 59, 59, 700000)
    offset = base - datetime.now()
    timer = KeepAlive("* 9-17 * * 1-5", lambda: pings.append(time.monotonic()),
                      now=lambda: datetime.now() + offset).start()
    try:
        time.sleep(1.2)
    finally:
        timer.stop()
    assert timer.fired == 1 and len(pings) == 1
    weekend = parse_schedule("*/5 7-19 * * 1-5")(datetime(2026, 11, 21, 12, 0))  # a Saturday
    assert weekend == datetime(2026, 11, 23, 7, 0)


@pytest.mark.unit
def test_the_clusters_keepalive_schedule_is_one_the_timer_understands():
    ask = yaml.safe_load((REPO / "manifests" / "base" / "functions" / "ask.yaml").read_text())
    env = {e["name"]: e.get("value") for e in ask["spec"]["template"]["spec"]["containers"][0]["env"]}
    schedule = env["RAGFN_KEEPALIVE_SCHEDULE"]
    assert parse_schedule(schedule)(datetime(2026, 11, 23, 6, 0)) == datetime(2026, 11, 23, 7, 0)
    with pytest.raises(ConfigError, match="not a cron expression") as bad:
        parse_schedule("every five minutes")
    assert "5 fields" in bad.value.hint


@pytest.mark.integration
def test_only_the_first_questions_of_a_cold_start_wait_for_it():
    from ragfn.llm.warmup import PredictorWarmth

    with httpx.Client() as http:
        warmth = PredictorWarmth(http, f"http://127.0.0.1:{free_port_block(1)}/v1", retry_seconds=0.1,
                                 give_up_seconds=30)
        started = time.monotonic()
        assert warmth.ready(wait=0.5) is False and 0.45 < time.monotonic() - started < 2
        started = time.monotonic()  # the warm-up is still running: the next question does not wait again
        assert warmth.ready(wait=0.5) is False and time.monotonic() - started < 0.1
        assert warmth.describe() == {"state": "unreachable", "warming": True, "gave_up": False}
    deadline = time.monotonic() + 5  # a closed client ends the warm-up quietly
    while warmth.describe()["warming"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
