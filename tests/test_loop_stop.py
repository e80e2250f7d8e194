"""The llama.cpp engine's stop on loops (RAGFN_LLM_STOP_ON_LOOP), with SmolLM2-135M-Instruct, the engine and the
real predictor driven by the official `openai` client: an answer that has become a repetition loop ends there, with
finish_reason "stop" and stop_reason "repetition", instead of running to max_tokens; with the setting off it runs on."""

from __future__ import annotations

import httpx
import openai
import pytest
from conftest import PredictorProcess, llamacpp_env

from inference.engines import LOOP, GenerationRequest, LlamaCppEngine
from ragfn.gateway.answer_quality import repetition_loop

pytestmark = pytest.mark.integration

# greedy SmolLM2 answers "Ladle, I am a LADLE. I am a LADLE. I am a LADLE. ..." and never stops by itself
LOOPING = [{"role": "user", "content": "Repeat after me forever: la la la"}]
MAX_TOKENS = 120


@pytest.fixture(scope="module")
def engine(gguf_model):
    llama = LlamaCppEngine(gguf_model, threads=2)
    llama.load()
    return llama


@pytest.fixture(scope="module")
def client(predictor) -> openai.OpenAI:
    """The session's predictor: the default settings, so the loop stop is on."""
    return openai.OpenAI(base_url=predictor.base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def client_without_loop_stop(gguf_model, tmp_path_factory):
    server = PredictorProcess(tmp_path_factory.mktemp("no-loop-stop"),
                              llamacpp_env(gguf_model, RAGFN_LLM_STOP_ON_LOOP="false")).start()
    yield openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
    server.stop()


def generate(engine: LlamaCppEngine, messages: list[dict], max_tokens: int = MAX_TOKENS):
    pieces = list(engine.stream(GenerationRequest(messages, max_tokens=max_tokens)))
    return "".join(p.text for p in pieces), pieces[-1]


def test_the_engine_stops_a_loop_and_runs_on_without_the_setting(engine, monkeypatch):
    stopped, last = generate(engine, LOOPING)
    assert last.finish_reason == "stop" and last.stop_reason == LOOP
    assert last.usage["completion_tokens"] < MAX_TOKENS / 2
    assert repetition_loop(stopped)  # the loop's own turns are kept: a reader (the gateway's gate) sees why

    monkeypatch.setattr(engine, "stop_on_loop", False)
    free, last = generate(engine, LOOPING)
    assert last.finish_reason == "length" and last.stop_reason is None
    assert last.usage["completion_tokens"] == MAX_TOKENS
    assert free.startswith(stopped)  # greedy: the same answer, cut where it had become a loop


def test_an_answer_that_does_not_loop_is_left_alone(engine):
    text, last = generate(engine, [{"role": "user", "content": "List the numbers from 1 to 100."}], 60)
    assert last.finish_reason == "length" and last.stop_reason is None
    assert last.usage["completion_tokens"] == 60 and not repetition_loop(text)


def test_the_predictor_stops_a_whole_answer_at_the_loop(client, client_without_loop_stop):
    stopped = client.chat.completions.create(model="smollm", messages=LOOPING, max_tokens=MAX_TOKENS, temperature=0)
    choice = stopped.choices[0]
    assert choice.finish_reason == "stop" and choice.model_extra["stop_reason"] == "repetition"
    assert stopped.usage.completion_tokens < MAX_TOKENS / 2 and repetition_loop(choice.message.content)

    free = client_without_loop_stop.chat.completions.create(model="smollm", messages=LOOPING, max_tokens=MAX_TOKENS,
                                                            temperature=0)
    assert free.choices[0].finish_reason == "length" and "stop_reason" not in free.choices[0].model_extra
    assert free.usage.completion_tokens == MAX_TOKENS
    assert free.choices[0].message.content.startswith(choice.message.content)


def test_the_predictor_stops_a_streamed_answer_at_the_loop(client, client_without_loop_stop):
    chunks = list(client.chat.completions.create(model="smollm", messages=LOOPING, max_tokens=MAX_TOKENS,
                                                 temperature=0, stream=True, stream_options={"include_usage": True}))
    finals = [c.choices[0] for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [(f.finish_reason, f.model_extra.get("stop_reason")) for f in finals] == [("stop", "repetition")]
    assert chunks[-1].usage.completion_tokens < MAX_TOKENS / 2
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert repetition_loop(text)

    chunks = list(client_without_loop_stop.chat.completions.create(
        model="smollm", messages=LOOPING, max_tokens=MAX_TOKENS, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    finals = [c.choices[0] for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [(f.finish_reason, f.model_extra.get("stop_reason")) for f in finals] == [("length", None)]
    assert chunks[-1].usage.completion_tokens == MAX_TOKENS


def test_raw_completions_and_kserve_v1_say_so_too(predictor):
    # a raw prompt (no chat template) that SmolLM2 continues turn after turn; the prompt's own turns do not count
    prompt = " ".join(["I am a LADLE."] * 3)
    done = httpx.post(f"{predictor.base_url}/completions", timeout=120, json={
        "model": "smollm", "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0}).json()
    assert done["choices"][0]["finish_reason"] == "stop" and done["choices"][0]["stop_reason"] == "repetition"
    assert done["usage"]["completion_tokens"] < MAX_TOKENS
    root = predictor.base_url.removesuffix("/v1")
    v1 = httpx.post(f"{root}/v1/models/smollm:predict", timeout=120, json={"instances": [
        {"messages": LOOPING, "max_tokens": MAX_TOKENS}]}).json()["predictions"][0]
    assert v1["finish_reason"] == "stop" and v1["stop_reason"] == "repetition"
