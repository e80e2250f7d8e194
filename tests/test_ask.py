"""The ask gateway through functions-framework's test client: auth, answers with citations, cache, SSE, limits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import DOC, REDIS_URL, ask

from ragfn.ingest.walk import ingest
from ragfn.serve.runtime import Runtime

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent


def test_answers_with_citations_and_an_in_process_cache_without_redis(gateway):
    client, root = gateway
    app = client()
    body = ask(app, "How do I sort a list?").get_json()
    assert "[1]" in body["answer"] and body["cache"] == "miss" and body["degraded"] is None
    assert body["citations"][0]["source"] == f"file://{root}/acme/lists.md"
    assert {"retrieve", "generate"} <= set(body["timings_ms"])
    assert ask(app, "How do I sort a list?").get_json()["cache"] == "hit"  # the same process remembers


def test_cache_hits_stay_inside_a_tenant(gateway):
    client, root = gateway
    app = client(RAGFN_REDIS_URL=REDIS_URL)
    assert ask(app, "How do I sort a list?").get_json()["cache"] == "miss"
    second = ask(app, "how do I sort a list").get_json()
    assert second["cache"] == "hit" and second["citations"][0]["source"].endswith("acme/lists.md")
    other = ask(app, "How do I sort a list?", key="key-globex").get_json()
    assert other["cache"] == "miss" and all("globex" in c["source"] for c in other["citations"])


def test_streaming_sends_tokens_then_citations_then_a_final_record(gateway):
    client, _ = gateway
    response = ask(client(), "How do I sort a list?", stream=True)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    events = [block.split("\n", 1) for block in response.get_data(as_text=True).strip().split("\n\n")]
    names = [name.removeprefix("event: ") for name, _ in events]
    assert names[0] == "token" and names[-2:] == ["citations", "final"]
    text = "".join(json.loads(data.removeprefix("data: ")) for name, data in events if name == "event: token")
    assert "[1]" in text
    final = json.loads(events[-1][1].removeprefix("data: "))
    assert final["degraded"] is None and final["cache"] == "miss"


def test_degrades_when_the_llm_and_redis_are_down(gateway):
    client, _ = gateway
    # nothing answers at the LLM URL: first it counts as starting (cold-start), then, given up on, as down
    app = client(RAGFN_LLM_URL="http://127.0.0.1:1/v1", RAGFN_REDIS_URL="redis://127.0.0.1:1/0",
                 RAGFN_LLM_COLD_WAIT_SECONDS="0.2", RAGFN_LLM_WARMUP_GIVE_UP_SECONDS="1")
    body = ask(app, "How do I sort a list?").get_json()
    assert body["degraded"] == "cache-unavailable+cold-start"
    assert "[1]" in body["answer"] and body["citations"]
    streamed = ask(app, "How do I sort a list?", stream=True).get_data(as_text=True)
    assert "event: status" in streamed and "warming up" in streamed
    time.sleep(1.5)
    streamed = ask(app, "How do I sort a list?", stream=True).get_data(as_text=True)
    assert "event: status" in streamed and "llm-unavailable" in streamed


def test_auth_and_bad_requests(gateway):
    client, _ = gateway
    app = client()
    missing = app.post("/v1/ask", json={"question": "q"})
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert ask(app, "q", key="wrong").status_code == 401
    for body, field in [({"question": ""}, "question"), ({"question": "x" * 5000}, "question"),
                        ({"question": 7}, "question"), ({"question": "q", "top_k": 0}, "top_k"),
                        ({"question": "q", "admin": True}, "admin")]:
        response = app.post("/v1/ask", json=body, headers={"X-API-Key": "key-acme"})
        assert response.status_code == 400 and field in response.get_json()["message"], body
    binary = app.post("/v1/ask", data=b"\x00\xff", headers={"X-API-Key": "key-acme"})
    assert binary.status_code == 400
    assert app.post("/v2/other", json={}, headers={"X-API-Key": "key-acme"}).status_code == 400


def test_per_tenant_rate_limit(gateway):
    client, _ = gateway
    app = client(RAGFN_REDIS_URL=REDIS_URL, RAGFN_RATE_LIMIT="2", RAGFN_RATE_WINDOW_SECONDS="60")
    answers = [ask(app, "How do I sort a list?") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[1].headers["X-RateLimit-Remaining"] == "0"
    assert 59 <= int(answers[2].headers["Retry-After"]) <= 60  # the refusal says when to come back
    assert ask(app, "How do I sort a list?", key="key-globex").status_code == 200  # another tenant's budget


def test_vector_store_down_answers_from_the_lexical_snapshot(ragfn_env, tmp_path, monkeypatch):
    """A `chroma run` server of this test's own, stopped between two questions."""
    import subprocess
    import sys

    from conftest import free_port, wait_http

    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("chroma")), "run", "--path", str(tmp_path / "db"),
                               "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v2/heartbeat", process=server)
        settings = ragfn_env.model_copy(update={"chroma_url": f"http://127.0.0.1:{port}"})
        runtime = Runtime(settings)
        (tmp_path / "lists.md").write_text(DOC)
        ingest([str(tmp_path / "lists.md")], runtime, tenant="acme")
        from ragfn.gateway.ask import AskRequest
        from ragfn.retrieval.dense import Caller

        request, caller = AskRequest(question="How do I sort a list?"), Caller("acme", ("eng",))
        assert runtime.gateway.ask(request, caller)["degraded"] is None  # builds the lexical snapshot too
    finally:
        server.terminate()
        server.wait(timeout=10)
    degraded = runtime.gateway.ask(AskRequest(question="What does sorted() return?"), caller)
    assert degraded["degraded"] == "vector-store-unavailable"
    assert degraded["citations"][0]["source"] == f"file://{tmp_path}/lists.md" and "[1]" in degraded["answer"]


def test_in_process_cache_never_serves_an_answer_about_a_changed_document(ragfn_env, tmp_path):
    from ragfn.gateway.ask import AskRequest
    from ragfn.retrieval.dense import Caller

    runtime = Runtime(ragfn_env)
    (tmp_path / "lists.md").write_text(DOC)
    ingest([str(tmp_path / "lists.md")], runtime, tenant="acme")
    request, caller = AskRequest(question="How do I sort a list?"), Caller("acme", ("eng",))
    assert runtime.gateway.ask(request, caller)["cache"] == "miss"
    assert runtime.gateway.ask(request, caller)["cache"] == "hit"
    (tmp_path / "lists.md").write_text(DOC.replace("list.sort()", "list.sort(key=...)"))
    ingest([str(tmp_path / "lists.md")], Runtime(ragfn_env), tenant="acme")  # another process re-indexes
    again = runtime.gateway.ask(request, caller)
    assert again["cache"] == "miss" and "key=..." in " ".join(c["text"] for c in again["citations"])


def test_a_streamed_answer_is_one_trace_whose_ask_span_ends_with_the_stream(gateway, spans):
    client, _ = gateway
    response = ask(client(), "How do I sort a list?", stream=True)
    assert response.get_data(as_text=True).rstrip().endswith("}")
    finished = {span.name: span for span in spans.get_finished_spans() if span.name.startswith("ragfn.ask")}
    root = finished["ragfn.ask"]
    assert {"ragfn.ask.cache_lookup", "ragfn.ask.retrieve", "ragfn.ask.llm", "ragfn.ask.cache_store"} <= set(finished)
    assert all(s.context.trace_id == root.context.trace_id and s.end_time <= root.end_time
               for s in finished.values())
    assert all(s.parent.span_id == root.context.span_id for name, s in finished.items() if name != "ragfn.ask")
    attributes = root.attributes
    assert attributes["rag.stream"] is True and attributes["rag.cache"] == "miss"
    assert attributes["rag.degraded"] is False
    assert attributes["rag.retrieval.count"] >= 1 and len(attributes["rag.retrieval.top_scores"]) >= 1
    assert attributes["rag.timing.generate_ms"] >= 0 and "rag.fallback.reason" not in attributes


def test_an_abandoned_stream_ends_its_spans(ragfn_env, tmp_path, spans):
    from ragfn.gateway.ask import AskRequest
    from ragfn.retrieval.dense import Caller

    runtime = Runtime(ragfn_env)
    (tmp_path / "lists.md").write_text(DOC)
    ingest([str(tmp_path / "lists.md")], runtime, tenant="acme")
    events = runtime.gateway.stream(AskRequest(question="How do I sort a list?", stream=True), Caller("acme"))
    assert next(events)[0] == "token"
    events.close()  # the client went away after the first token
    finished = {span.name: span for span in spans.get_finished_spans()}
    assert finished["ragfn.ask"].attributes["rag.cancelled"] is True
    assert finished["ragfn.ask.llm"].end_time <= finished["ragfn.ask"].end_time
    assert "ragfn.ask.cache_store" not in finished  # a cut-short answer is never cached


def test_a_question_is_embedded_once_per_answer_and_not_at_all_on_an_exact_repeat(ragfn_env, tmp_path):
    from ragfn.gateway.ask import AskRequest
    from ragfn.retrieval.dense import Caller

    runtime = Runtime(ragfn_env)
    (tmp_path / "lists.md").write_text(DOC)
    ingest([str(tmp_path / "lists.md")], runtime, tenant="acme")
    embedded: list[str] = []
    embed = runtime.embedder.embed
    runtime.embedder.embed = lambda texts: embedded.extend(texts) or embed(texts)  # counts, then really embeds
    request, caller = AskRequest(question="How do I sort a list?"), Caller("acme", ("eng",))
    first = runtime.gateway.ask(request, caller)
    assert first["cache"] == "miss" and first["citations"]
    assert embedded == ["How do I sort a list?"]  # the cache lookup's vector also served the dense search
    assert runtime.gateway.ask(AskRequest(question="how do i sort a list"), caller)["cache"] == "hit"
    assert embedded == ["How do I sort a list?"]  # the exact tier needs no embedding


# Security: /v1/me and upload status scan ledgers and dead letters on every call and had no limit at all.
def test_the_reads_a_chat_polls_have_a_limit_of_their_own_per_caller(gateway):
    client, _ = gateway
    app = client(RAGFN_REDIS_URL=REDIS_URL, RAGFN_READ_RATE_LIMIT="3", RAGFN_RATE_WINDOW_SECONDS="60")
    acme = {"Authorization": "Bearer key-acme"}
    reads = [app.get("/v1/me", headers=acme), app.get("/v1/documents/status?document_id=s3://u/x.md&version=v1", headers=acme),
             app.get("/v1/me", headers=acme), app.get("/v1/me", headers=acme)]
    assert [r.status_code for r in reads] == [200, 404, 200, 429], [r.get_json() for r in reads]  # 404: no such upload
    assert "caller" in reads[-1].get_json()["message"] and int(reads[-1].headers["Retry-After"]) >= 59
    assert app.get("/v1/me", headers={"Authorization": "Bearer key-globex"}).status_code == 200
    assert ask(app, "How do I sort a list?").status_code == 200  # questions keep their own budget


def test_a_chat_polling_who_am_i_does_not_use_up_the_tenant_s_questions(gateway):
    client, _ = gateway
    app = client(RAGFN_REDIS_URL=REDIS_URL, RAGFN_RATE_LIMIT="1", RAGFN_RATE_WINDOW_SECONDS="60")
    headers = {"Authorization": "Bearer key-acme"}
    assert [app.get("/v1/me", headers=headers).status_code for _ in range(3)] == [200, 200, 200]
    assert [ask(app, "How do I sort a list?").status_code for _ in range(2)] == [200, 429]
    assert app.get("/v1/me", headers=headers).status_code == 200  # and still answers over the limit


def test_a_json_body_over_the_limit_is_refused_before_it_is_read(gateway):
    """A caller with a key cannot make the gateway hold an unbounded body in memory (JSON routes cap at 64 KiB)."""
    import httpx
    from conftest import Served

    client, _ = gateway
    app = client()
    big = {"question": "x" * 200_000}
    for route in ("/v1/ask", "/v1/feedback"):
        refused = app.post(route, json=big, headers={"Authorization": "Bearer key-acme"})
        assert refused.status_code == 400 and refused.get_json()["error"] == "RequestTooLarge", refused.get_json()
    served = Served(app.application)

    def chunked():  # no Content-Length: the cap must hold while the body streams in
        for _ in range(100):
            yield b" " * 100_000

    try:
        response = httpx.post(f"{served.url}v1/ask", content=chunked(), timeout=30, headers={
            "Authorization": "Bearer key-acme", "Content-Type": "application/json"})
        assert response.status_code == 400 and response.json()["error"] == "RequestTooLarge", response.text
    finally:
        served.server.shutdown()
    assert ask(app, "How do I sort a list?").status_code == 200  # an ordinary question still goes through


# Security: /v1/warmup answered anyone, with the predictor's URL, and a ping every few minutes from anywhere kept a
# GPU predictor from ever scaling to zero.
def test_the_warmup_needs_credentials_and_never_shows_the_predictors_url(gateway):
    import time

    from conftest import Served
    from werkzeug.wrappers import Response

    knocks = []
    predictor = Served(lambda environ, start: (knocks.append(environ["PATH_INFO"]) or Response("down", 503))(
        environ, start))  # a predictor that is still starting: every request is counted
    client, _ = gateway
    url = predictor.url.replace("127.0.0.1", "ragfn:s3cret@127.0.0.1") + "v1"
    app = client(RAGFN_LLM_URL=url, RAGFN_LLM_WARMUP_GIVE_UP_SECONDS="30", RAGFN_LLM_SERVED_NAME="smollm")
    try:
        for method in (app.post, app.get):
            refused = method("/v1/warmup")
            assert refused.status_code == 401 and str(predictor.server.server_port) not in refused.get_data(True)
        time.sleep(0.5)
        assert knocks == []  # nobody without credentials woke it
        answer = app.post("/v1/warmup", headers={"Authorization": "Bearer key-acme"})
        assert answer.status_code == 202 and answer.get_json()["llm"] == "smollm"
        assert str(predictor.server.server_port) not in answer.get_data(as_text=True)
        deadline = time.monotonic() + 10
        while not knocks:
            assert time.monotonic() < deadline, "the signed-in warm-up never reached the predictor"
            time.sleep(0.05)
    finally:
        predictor.server.shutdown()


