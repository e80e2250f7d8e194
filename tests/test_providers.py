"""A second provider (RAGFN_LLM_FALLBACK_URL) before the extractive engine: tried when the primary is rate-limited,
down or refusing, behind its own breaker; its answers carry its model and are cached under it.

The fallback is the real predictor (KServe's ModelServer) with its extractive engine, served as "backup"; the primary
is a misbehaving OpenAI-compatible server (tests/chat_server.py: a 429, a 500, a refused key) or a closed port."""

from __future__ import annotations

import socket

import pytest
from chat_server import API_KEY
from conftest import PredictorProcess, ask
from test_cold_start import events

from ragfn.core.config import Settings
from ragfn.serve.runtime import Runtime

pytestmark = pytest.mark.integration
QUESTION = "How do I sort a list?"


@pytest.fixture(scope="module")
def backup(tmp_path_factory):
    server = PredictorProcess(tmp_path_factory.mktemp("backup"), {"RAGFN_LLM_ENGINE": "extractive"},
                              model_name="backup").start()
    yield server
    server.stop()


def closed_url() -> str:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{closed.getsockname()[1]}/v1"


def test_a_rate_limited_primary_hands_the_question_to_the_fallback_which_is_cached_under_its_model(
        gateway, chat_server, backup):
    client, _ = gateway
    app = client(RAGFN_LLM_URL=chat_server.base_url, RAGFN_LLM_SERVED_NAME="busy-429", RAGFN_LLM_API_KEY=API_KEY,
                 RAGFN_LLM_FALLBACK_URL=backup.base_url, RAGFN_LLM_FALLBACK_SERVED_NAME="backup")
    first = ask(app, QUESTION).get_json()
    assert first["degraded"] is None and (first["model"], first["provider"]) == ("backup", "fallback")
    assert "[1]" in first["answer"] and first["gate"]["passed"] and first["cache"] == "miss"
    streamed = events(ask(app, QUESTION, stream=True))
    final = dict(streamed)["final"]
    # the primary is still worth asking (its circuit is closed), so the lookup is in its scope: not the backup's
    assert (final["model"], final["provider"], final["cache"]) == ("backup", "fallback", "miss")
    assert "status" not in dict(streamed) and "replace" not in dict(streamed)
    ask(app, QUESTION)  # the primary's third 429 in a row opens its circuit
    hit = ask(app, QUESTION).get_json()  # now the backup is the model expected: its cached answer is served
    assert (hit["cache"], hit["model"], hit["provider"]) == ("hit", "backup", None)
    assert hit["answer"] == first["answer"]


@pytest.mark.parametrize(("url", "served"), [("chat", "fails-500"), ("chat", "nope"), ("closed", "smollm")])
def test_a_down_or_refusing_primary_falls_back_to_the_second_provider(gateway, chat_server, backup, url, served):
    client, _ = gateway
    # "nope" is a model the server does not have (404: refused); a closed port is a predictor that is not there
    app = client(RAGFN_LLM_URL=chat_server.base_url if url == "chat" else closed_url(), RAGFN_LLM_SERVED_NAME=served,
                 RAGFN_LLM_API_KEY=API_KEY, RAGFN_LLM_COLD_WAIT_SECONDS="0.2",
                 RAGFN_LLM_FALLBACK_URL=backup.base_url, RAGFN_LLM_FALLBACK_SERVED_NAME="backup")
    body = ask(app, QUESTION).get_json()
    assert body["degraded"] is None and (body["model"], body["provider"]) == ("backup", "fallback")
    assert body["citations"][0]["n"] == 1


def test_when_both_providers_fail_the_extractive_engine_answers_with_the_primarys_reason(gateway, chat_server):
    client, _ = gateway
    app = client(RAGFN_LLM_URL=chat_server.base_url, RAGFN_LLM_SERVED_NAME="fails-500", RAGFN_LLM_API_KEY=API_KEY,
                 RAGFN_LLM_FALLBACK_URL=closed_url(), RAGFN_LLM_FALLBACK_SERVED_NAME="backup")
    for _ in range(4):
        body = ask(app, QUESTION).get_json()
        assert body["degraded"] == "llm-unavailable" and (body["model"], body["provider"]) == ("extractive",
                                                                                             "extractive")
        assert "[1]" in body["answer"] and body["gate"] is None


def test_each_provider_has_its_own_breaker_and_key(settings, chat_server):
    runtime = Runtime(Settings(**{**settings.model_dump(), "llm_url": chat_server.base_url,
                                  "llm_served_name": "fails-500", "llm_api_key": API_KEY,
                                  "llm_fallback_url": closed_url(), "llm_fallback_served_name": "backup",
                                  "llm_fallback_api_key": "sk-other"}))
    gateway = runtime.gateway
    assert runtime.second_llm.headers == {"Authorization": "Bearer sk-other"} and runtime.llm.headers != \
        runtime.second_llm.headers
    breakers = gateway.providers.breakers
    assert set(breakers) == {"llm", "llm-fallback"} and breakers["llm"] is not breakers["llm-fallback"]
    messages = [{"role": "user", "content": QUESTION}]
    from opentelemetry import trace

    span = trace.get_tracer("test").start_span("t")
    for _ in range(3):
        assert gateway.providers.call(span, messages, "complete", 16).provider == "extractive"
    assert breakers["llm"].state == breakers["llm-fallback"].state == "open"
    assert gateway.providers.expected_model() == "backup"  # the primary's circuit is open


def test_without_a_fallback_url_there_is_no_second_provider(settings):
    runtime = Runtime(settings)
    assert runtime.second_llm is None and set(runtime.gateway.providers.breakers) == {"llm"}


def test_a_fallback_serving_the_primarys_name_is_cached_apart_from_it(gateway, backup):
    client, _ = gateway
    # both serve "backup" (two predictors left at one default name): the fallback's answers must not become the
    # primary's, so while the primary is asked first its scope never holds them
    app = client(RAGFN_LLM_URL=closed_url(), RAGFN_LLM_SERVED_NAME="backup", RAGFN_LLM_COLD_WAIT_SECONDS="0.2",
                 RAGFN_LLM_FALLBACK_URL=backup.base_url, RAGFN_LLM_FALLBACK_SERVED_NAME="backup")
    for _ in range(2):
        body = ask(app, QUESTION).get_json()
        assert (body["provider"], body["model"], body["cache"]) == ("fallback", "backup", "miss")
    runtime = Runtime(Settings())  # the same settings (the environment): what that gateway caches under
    assert runtime.gateway.providers.cache_names == {"primary": "backup", "fallback": "backup+fallback"}


def test_llm_urls_are_checked_when_the_settings_load_and_never_shown_with_credentials(settings, chat_server):
    from pydantic import ValidationError

    from ragfn.core.errors import Unavailable
    from ragfn.llm.client import OpenAIChatClient

    for bad in ({"llm_url": "http://host:notaport/v1"}, {"llm_url": "ftp://host/v1"},
                {"llm_fallback_url": "http://host:notaport/v1", "llm_url": chat_server.base_url},
                {"llm_fallback_url": chat_server.base_url}):  # a fallback with no primary
        with pytest.raises(ValidationError, match="RAGFN_LLM"):
            Settings(**{**settings.model_dump(), **bad})
    down = OpenAIChatClient(closed_url().replace("http://", "http://user:secret@") + "?key=secret", "m")
    with pytest.raises(Unavailable) as raised:
        down.complete([{"role": "user", "content": "hi"}], max_tokens=4)
    assert "secret" not in str(raised.value) and "127.0.0.1" in str(raised.value)
