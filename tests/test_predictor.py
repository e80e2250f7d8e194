"""The KServe predictor as a real server: SmolLM2 on llama.cpp under KServe's ModelServer, driven by the official
`openai` client (chat, streaming, stop sequences, concurrency, cancellation), KServe's v1/v2 protocol, metrics."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from conftest import PredictorProcess, llamacpp_env

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(predictor) -> openai.OpenAI:
    return openai.OpenAI(base_url=predictor.base_url, api_key="unused", max_retries=0, timeout=60)


def metric(base_url: str, name: str, **labels: str) -> float:
    """One sample of the predictor's /metrics (KServe's own route, the default Prometheus registry)."""
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=5).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name) and (not wanted or wanted in line):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def cancelled(base_url: str) -> float:
    return metric(base_url, "ragfn_predictor_requests_total", outcome="cancelled")


def wait_until_cancelled(base_url: str, before: float, message: str) -> None:
    deadline = time.monotonic() + 10
    while cancelled(base_url) == before:
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def read_a_little_and_leave(client: openai.OpenAI, model: str) -> None:
    """What a closed browser tab does: a long streamed answer, three chunks read, the connection dropped."""
    stream = client.chat.completions.create(model=model, max_tokens=400, stream=True, messages=[
        {"role": "user", "content": "Write a very long story about a dragon."}])
    for _, _chunk in zip(range(3), stream):
        pass
    stream.close()


def test_lists_its_model_and_is_ready(predictor, client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["smollm"]
    root = predictor.base_url.removesuffix("/v1")
    assert httpx.get(f"{root}/v1/models/smollm").json()["ready"] is True  # KServe v1 readiness
    assert httpx.get(f"{root}/v2/models/smollm/ready").status_code == 200
    warm = httpx.post(f"{predictor.base_url}/warmup").json()
    assert warm["ready"] and warm["state"] == "ready" and warm["load_seconds"] > 0


def test_chat_completion_with_usage(client):
    answer = client.chat.completions.create(model="smollm", messages=QUESTION, max_tokens=8, temperature=0)
    assert answer.choices[0].message.content.strip()
    assert answer.choices[0].finish_reason == "length" and answer.usage.completion_tokens == 8
    assert answer.usage.prompt_tokens > 5 and answer.usage.total_tokens == answer.usage.prompt_tokens + 8


def test_streaming_gives_the_same_text_and_usage(client):
    whole = client.chat.completions.create(model="smollm", messages=QUESTION, max_tokens=20, temperature=0)
    chunks = list(client.chat.completions.create(model="smollm", messages=QUESTION, max_tokens=20, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and len(chunks) > 5
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]


def test_stop_sequences(client):
    messages = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    free = client.chat.completions.create(model="smollm", messages=messages, max_tokens=40, temperature=0)
    assert "5" in free.choices[0].message.content
    stopped = client.chat.completions.create(model="smollm", messages=messages, max_tokens=40, temperature=0,
                                             stop=["5"])
    text = stopped.choices[0].message.content
    assert "4" in text and "5" not in text and stopped.choices[0].finish_reason == "stop"
    assert free.choices[0].message.content.startswith(text.rstrip())


def test_temperature_changes_sampling(client):
    greedy = {client.chat.completions.create(model="smollm", messages=QUESTION, max_tokens=12,
                                             temperature=0).choices[0].message.content for _ in range(2)}
    hot = {client.chat.completions.create(model="smollm", messages=QUESTION, max_tokens=12,
                                          temperature=2).choices[0].message.content for _ in range(4)}
    assert len(greedy) == 1 and len(hot) > 1


def test_text_completions(client):
    done = client.completions.create(model="smollm", prompt="The capital of France is", max_tokens=6, temperature=0)
    assert done.choices[0].text.strip() and done.usage.completion_tokens == 6
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="smollm", prompt="The capital of France is", max_tokens=6, temperature=0, stream=True) if c.choices)
    assert streamed == done.choices[0].text


def test_concurrent_requests_queue_behind_the_engine(predictor, client):
    before = metric(predictor.base_url, "ragfn_predictor_requests_total", outcome="length")
    queued_seen, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            queued_seen.append(metric(predictor.base_url, "ragfn_predictor_requests_queued"))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: client.chat.completions.create(
            model="smollm", messages=[{"role": "user", "content": f"Say a word about the number {i}."}],
            max_tokens=24, temperature=0), range(4)))
    stop.set()
    watcher.join()
    assert all(a.choices[0].message.content and a.usage.completion_tokens == 24 for a in answers)
    assert max(queued_seen) >= 1  # one runs at a time on llama.cpp; the others waited in the queue
    assert metric(predictor.base_url, "ragfn_predictor_requests_total", outcome="length") == before + 4
    assert metric(predictor.base_url, "ragfn_predictor_requests_queued") == 0


def test_a_client_that_disconnects_cancels_its_generation(predictor, client):
    before = cancelled(predictor.base_url)
    read_a_little_and_leave(client, "smollm")
    wait_until_cancelled(predictor.base_url, before, "the generation was not cancelled")
    assert metric(predictor.base_url, "ragfn_predictor_requests_in_flight") == 0
    started = time.monotonic()  # the model is free again: a short answer does not wait for 400 tokens
    client.chat.completions.create(model="smollm", messages=QUESTION, max_tokens=2)
    assert time.monotonic() - started < 5


def test_a_client_that_gives_up_on_a_whole_answer_cancels_it_too(predictor):
    before = cancelled(predictor.base_url)
    with pytest.raises(httpx.ReadTimeout):  # not streaming: the client hangs up while the answer is generated
        httpx.post(f"{predictor.base_url}/chat/completions", timeout=httpx.Timeout(1.0), json={
            "max_tokens": 400, "messages": [{"role": "user", "content": "Write a very long story about a dragon."}]})
    wait_until_cancelled(predictor.base_url, before, "the abandoned answer kept generating")


def test_metrics_report_latency_speed_and_load_time(predictor, client):
    client.chat.completions.create(model="smollm", messages=QUESTION, max_tokens=16)
    base = predictor.base_url
    assert metric(base, "ragfn_predictor_time_to_first_token_seconds_count") >= 1
    assert metric(base, "ragfn_predictor_tokens_per_second_count") >= 1
    rate = metric(base, "ragfn_predictor_tokens_per_second_sum") / metric(base, "ragfn_predictor_tokens_per_second_count")
    assert 1 < rate < 10_000
    assert metric(base, "ragfn_predictor_engine_load_seconds") > 0
    assert metric(base, "ragfn_predictor_completion_tokens_total") >= 16


def test_kserve_v1_and_v2_inference(predictor):
    root = predictor.base_url.removesuffix("/v1")
    v1 = httpx.post(f"{root}/v1/models/smollm:predict", timeout=60, json={"instances": [
        "What is the capital of France?", {"prompt": "One, two,", "max_tokens": 3},
        {"messages": QUESTION, "max_tokens": 4}]}).json()
    assert [p["usage"]["completion_tokens"] for p in v1["predictions"][1:]] == [3, 4]
    assert all(p["text"].strip() for p in v1["predictions"])
    v2 = httpx.post(f"{root}/v2/models/smollm/infer", timeout=60, json={
        "inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["Name a colour."]}],
        "parameters": {"max_tokens": 5}}).json()
    assert v2["outputs"][0]["name"] == "text_output" and v2["outputs"][0]["data"][0].strip()


def test_bad_requests_get_openai_shaped_errors(predictor, client):
    with pytest.raises(openai.BadRequestError, match="n"):
        client.chat.completions.create(model="smollm", messages=QUESTION, n=2)
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="smollm", messages=[])
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4", messages=QUESTION)
    garbage = httpx.post(f"{predictor.base_url}/chat/completions", content=b"{not json", timeout=10)
    assert garbage.status_code == 400 and "not JSON" in garbage.json()["error"]["message"]
    v1 = httpx.post(f"{predictor.base_url}/models/smollm:predict", json={"rows": []}, timeout=10)
    assert v1.status_code == 400 and "instances" in v1.json()["error"]["message"]


def test_a_full_queue_refuses_with_retry_after(gguf_model, tmp_path):
    server = PredictorProcess(tmp_path, llamacpp_env(gguf_model, RAGFN_LLM_MAX_QUEUE="0")).start()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=60)
        long = client.chat.completions.create(model="smollm", max_tokens=300, stream=True, messages=[
            {"role": "user", "content": "Write a very long story about a dragon."}])
        next(iter(long))  # generating now, holding the only slot
        refused = httpx.post(f"{server.base_url}/chat/completions", timeout=10,
                             json={"messages": QUESTION, "max_tokens": 2})
        long.close()
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "queue" in refused.json()["error"]["message"]
    finally:
        server.stop()


def test_settings_that_cannot_work_stop_the_server_at_once(tmp_path):
    missing = PredictorProcess(tmp_path, {"RAGFN_LLM_ENGINE": "llamacpp"}).start(wait=False)
    assert missing.process.wait(timeout=60) == 2
    assert "RAGFN_LLM_MODEL" in missing.log()


def test_a_model_that_fails_to_load_is_reported_not_hidden(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    server = PredictorProcess(tmp_path, llamacpp_env(broken)).start(wait=False)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                warm = httpx.post(f"{server.base_url}/warmup", params={"wait": 2}, timeout=10)
                if warm.json().get("state") == "failed":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        assert warm.status_code == 503 and "cannot load" in warm.json()["error"]
        chat = httpx.post(f"{server.base_url}/chat/completions", json={"messages": QUESTION}, timeout=10)
        assert chat.status_code == 503 and re.search("failed to load.*cannot load", chat.json()["error"]["message"])
    finally:
        server.stop()


# Security: the predictor answered anyone who reached it (its OpenAI routes and KServe's own), and under `ragfn dev`
# it listened on every address of the laptop.
def test_with_a_key_every_route_but_probes_needs_it_and_dev_binds_loopback(tmp_path):
    import psutil

    key = "k" * 40
    server = PredictorProcess(tmp_path, {"RAGFN_LLM_ENGINE": "extractive", "RAGFN_LLM_API_KEY": key},
                              args=("--host", "127.0.0.1")).start()
    root, signed = server.base_url.removesuffix("/v1"), {"Authorization": f"Bearer {key}"}
    chat = {"messages": QUESTION, "max_tokens": 8}
    try:
        for method, path, body in (("POST", "/v1/chat/completions", chat), ("POST", "/v1/completions",
                                   {"prompt": "One, two,"}), ("GET", "/v1/models", None), ("POST", "/v1/warmup", None),
                                   ("POST", "/v1/models/smollm:predict", {"instances": ["Hi"]}),
                                   ("POST", "/v2/models/smollm/infer", {"inputs": []})):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
                refused = httpx.request(method, root + path, json=body, headers=headers, timeout=30)
                assert refused.status_code == 401, (path, headers, refused.text)
                assert refused.json()["error"]["code"] == "Unauthorized"
        assert httpx.post(f"{root}/v1/chat/completions", json=chat, headers=signed, timeout=60).status_code == 200
        for probe in ("/", "/v2/health/live", "/v2/health/ready", "/v1/models/smollm", "/metrics"):
            assert httpx.get(root + probe, timeout=10).status_code == 200, probe
        listening = {c.laddr.ip for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == server.port}
        assert listening == {"127.0.0.1"}
    finally:
        server.stop()
