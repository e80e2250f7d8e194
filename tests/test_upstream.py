"""The `openai` engine (a proxy to an OpenAI-compatible upstream) and the extractive engine, each served by a real
predictor; the upstream is the llama.cpp predictor itself, so the proxy's answers can be compared token for token."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest
from conftest import PredictorProcess, free_port_block
from test_predictor import QUESTION, cancelled, read_a_little_and_leave, wait_until_cancelled

from inference.engines import GenerationRequest
from inference.upstream import UpstreamEngine
from ragfn.core.errors import Unavailable
from ragfn.llm.client import build_messages
from ragfn.retrieval.context import Passage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def proxy(predictor, tmp_path_factory):
    server = PredictorProcess(tmp_path_factory.mktemp("proxy"), {
        "RAGFN_LLM_ENGINE": "openai", "RAGFN_LLM_UPSTREAM_URL": predictor.base_url,
        "RAGFN_LLM_MODEL": "smollm"}, model_name="proxied").start()
    yield server
    server.stop()


def chat(base_url: str, model: str, **options):
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
    return client.chat.completions.create(model=model, messages=QUESTION, temperature=0, **options)


def test_the_proxy_answers_as_its_upstream_does(predictor, proxy):
    direct = chat(predictor.base_url, "smollm", max_tokens=16)
    proxied = chat(proxy.base_url, "proxied", max_tokens=16)
    assert proxied.choices[0].message.content == direct.choices[0].message.content
    assert proxied.usage.prompt_tokens == direct.usage.prompt_tokens and proxied.usage.completion_tokens == 16
    streamed = chat(proxy.base_url, "proxied", max_tokens=16, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == \
        direct.choices[0].message.content
    word = direct.choices[0].message.content.split()[3]  # a stop sequence the answer is known to reach
    stopped = chat(proxy.base_url, "proxied", max_tokens=16, stop=[word])
    assert stopped.choices[0].finish_reason == "stop"
    assert direct.choices[0].message.content.startswith(stopped.choices[0].message.content)
    assert word not in stopped.choices[0].message.content


def test_a_client_leaving_the_proxy_cancels_the_upstream_generation(predictor, proxy):
    before = cancelled(predictor.base_url)
    read_a_little_and_leave(openai.OpenAI(base_url=proxy.base_url, api_key="unused", max_retries=0), "proxied")
    wait_until_cancelled(predictor.base_url, before, "the upstream kept generating for a client that left")


def test_retries_until_a_late_upstream_comes_up(tmp_path):
    upstream = PredictorProcess(tmp_path, {"RAGFN_LLM_ENGINE": "extractive"}, model_name="extractive",
                                port=free_port_block(1))
    engine = UpstreamEngine(upstream.base_url, "extractive", retries=8, backoff=0.5)
    starter = threading.Timer(1.0, upstream.start)  # down for the first attempts
    starter.start()
    try:
        pieces = list(engine.stream(GenerationRequest([{"role": "user", "content": "hello"}], max_tokens=20)))
        assert pieces[-1].finish_reason == "stop" and "".join(p.text for p in pieces).strip()
    finally:
        starter.join()
        upstream.stop()
    gone = UpstreamEngine(upstream.base_url, "extractive", retries=2, backoff=0.05)
    started = time.monotonic()
    with pytest.raises(Unavailable, match="cannot reach"):
        list(gone.stream(GenerationRequest([{"role": "user", "content": "hello"}])))
    assert time.monotonic() - started < 5


def test_the_extractive_engine_cites_the_numbered_passages(tmp_path):
    server = PredictorProcess(tmp_path, {"RAGFN_LLM_ENGINE": "extractive"}, model_name="extractive").start()
    try:
        passages = [Passage(1, "c1", "file:///lists.md", "Lists", 0, 0, "To sort a list in place, call list.sort().",
                            1.0)]
        messages = build_messages("How do I sort a list?", passages)
        body = httpx.post(f"{server.base_url}/chat/completions", timeout=30,
                          json={"messages": messages, "max_tokens": 100, "temperature": 1.5}).json()
        assert body["choices"][0]["message"]["content"] == "To sort a list in place, call list.sort(). [1]"
        cut = httpx.post(f"{server.base_url}/chat/completions", timeout=30,
                         json={"messages": messages, "max_tokens": 3}).json()
        assert cut["choices"][0]["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 3
    finally:
        server.stop()
