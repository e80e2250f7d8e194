"""The gateway's LLM side: prompts, citations, the extractive LLM, and OpenAIChatClient over real HTTP against
a minimal OpenAI-compatible server around the extractive engine, standing in for the predictor until the inference issue lands.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from chat_server import API_KEY, ChatServer
from conftest import REPO, free_port

from ragfn.core.errors import BadEvent, ConfigError, RateLimited, Unavailable
from ragfn.core.uris import document_name
from ragfn.llm.client import (
    LLM,
    PROMPT_VERSION,
    ExtractiveLLM,
    LLMRejected,
    OpenAIChatClient,
    build_messages,
    citations,
    parse_messages,
)
from ragfn.llm.extractive import extractive_answer
from ragfn.retrieval.context import Passage, render

QUESTION = "How do I sort a list?"


def passage(number: int, text: str, heading: str = "") -> Passage:
    return Passage(number, f"c{number}", f"file:///doc{number}.md", heading, 0, len(text), text, 1.0 / number)


PASSAGES = [
    passage(1, "Lists are mutable sequences. To sort a list in place, call list.sort(). It returns None.", "Lists"),
    passage(2, "The sorted() built-in returns a new sorted list from any iterable.\n\n[5] A footnote-like paragraph.\n"
               "\nQuestion: a line that looks like the prompt's own. The original is unchanged.", "Built-ins › sorted"),
    passage(3, "Dictionaries map keys to values. They keep insertion order."),
]


@pytest.fixture(scope="module")
def server(chat_server: ChatServer) -> ChatServer:
    return chat_server


def client(server: ChatServer, model: str = "extractive", **kwargs: object) -> OpenAIChatClient:
    return OpenAIChatClient(server.base_url, model, **{"api_key": API_KEY, **kwargs})  # type: ignore[arg-type]


class TestPromptAndCitations:
    pytestmark = pytest.mark.unit

    def test_messages_hold_the_rules_the_passages_and_the_question(self):
        system, user = build_messages("  How do I\n sort a list?  ", PASSAGES)
        assert system["role"] == "system" and "ONLY" in system["content"] and "[1]" in system["content"]
        assert "do not know" in system["content"]
        assert user["role"] == "user" and render(PASSAGES) in user["content"]
        assert user["content"].endswith("\n\nQuestion: How do I sort a list?")
        assert PROMPT_VERSION == "v2" and build_messages(QUESTION, PASSAGES, prompt_version="v2")[1] == user
        with pytest.raises(ConfigError):
            build_messages(QUESTION, PASSAGES, prompt_version="v0")

    def test_v2_names_each_document_so_where_it_is_stored_does_not_change_the_prompt(self):
        def stored_at(root: str) -> list[Passage]:
            return [replace(p, source=f"{root}/team/doc{p.number}.md") for p in PASSAGES]

        here, there = (build_messages(QUESTION, stored_at(root)) for root in ("file:///tmp/pytest-7", "s3://bucket"))
        assert here == there and "[2] doc2.md › Built-ins › sorted\n" in here[1]["content"]
        assert "file://" not in here[1]["content"]
        v1 = build_messages(QUESTION, stored_at("s3://bucket"), prompt_version="v1")  # kept: answers cached under it
        assert "[2] s3://bucket/team/doc2.md › Built-ins › sorted\n" in v1[1]["content"]
        assert v1[0] == here[0]  # the same rules

    def test_v3_asks_for_quotes_with_the_same_passages_and_question(self):
        system, user = build_messages(QUESTION, PASSAGES, prompt_version="v3")
        assert "word for word" in system["content"] and "The documents do not answer this." in system["content"]
        assert user == build_messages(QUESTION, PASSAGES)[1] and parse_messages([system, user])[0] == QUESTION

    def test_the_extractive_llm_reads_back_exactly_what_build_messages_wrote(self):
        question, parsed = parse_messages(build_messages(QUESTION, PASSAGES))
        assert question == QUESTION
        # "Question:" stays text; a line opening with "[5]" is written "(5)" so it cannot pass for a passage's header
        assert [(p.number, p.source, p.heading_path, p.text) for p in parsed] == [
            (p.number, document_name(p.source), p.heading_path, p.text.replace("\n[5] ", "\n(5) ")) for p in PASSAGES]
        assert "[5]" in PASSAGES[1].text
        assert parse_messages(build_messages("anything?", [])) == ("anything?", [])
        assert parse_messages([{"role": "user", "content": [{"type": "text", "text": "plain chat"}]}]) == (
            "plain chat", [])

    def test_citations_in_order_of_first_use_ignoring_unknown_numbers(self):
        assert citations("B [2]. A [1]. B again [2].", PASSAGES) == [PASSAGES[1], PASSAGES[0]]
        assert citations("see [3, 1] and [1,2]", PASSAGES) == [PASSAGES[2], PASSAGES[0], PASSAGES[1]]
        assert citations("[0] [4] [12] [-1] [x] [] [ 1 ]", PASSAGES) == []
        assert citations("", PASSAGES) == [] and citations("[1]", []) == []
        renumbered = [passage(7, "Seven.")]
        assert citations("[1] [7]", renumbered) == renumbered

    def test_extractive_llm_is_deterministic_and_streams_word_by_word(self):
        messages = build_messages(QUESTION, PASSAGES)
        first = ExtractiveLLM().complete(messages, max_tokens=200)
        assert first == ExtractiveLLM().complete(messages, max_tokens=200)
        assert first.text == extractive_answer(QUESTION, PASSAGES) and first.finish_reason == "stop"
        assert first.model == "extractive" and first.prompt_tokens > 20
        deltas = list(ExtractiveLLM().stream(messages, max_tokens=200))
        assert "".join(deltas) == first.text and len(deltas) == first.completion_tokens > 3
        assert deltas == list(ExtractiveLLM().stream(messages, max_tokens=200, temperature=1.0))
        cut = ExtractiveLLM().complete(messages, max_tokens=3)
        assert cut.text == "".join(deltas[:3]) and cut.finish_reason == "length"
        stopped = ExtractiveLLM().complete(messages, max_tokens=200, stop=["[1]"])
        assert stopped.text == first.text.split("[1]")[0].rstrip()
        assert isinstance(ExtractiveLLM(), LLM)


class TestOpenAIChatClient:
    pytestmark = pytest.mark.integration

    def test_completes_and_streams_the_same_answer(self, server: ChatServer):
        messages = build_messages(QUESTION, PASSAGES)
        with contextlib.closing(client(server)) as llm:
            assert isinstance(llm, LLM) and llm.warmup()
            done = llm.complete(messages, max_tokens=200)
            assert done.text == extractive_answer(QUESTION, PASSAGES) and done.model == "extractive"
            assert done.completion_tokens > 3 and done.prompt_tokens > 20 and done.finish_reason == "stop"
            with contextlib.closing(llm.stream(messages, max_tokens=200)) as stream:
                deltas = list(stream)
            assert "".join(deltas) == done.text and len(deltas) > 3 and stream.finish_reason == "stop"
            assert citations(done.text, PASSAGES)[0] == PASSAGES[0]
            short = llm.stream(messages, max_tokens=2)
            assert len(list(short)) == 2 and short.finish_reason == "length"

    def test_needs_no_openai_package(self, server: ChatServer):
        code = ("import sys; sys.modules['openai'] = None\n"  # any `import openai` now fails
                "from ragfn.llm.client import OpenAIChatClient, build_messages\n"
                "llm = OpenAIChatClient(sys.argv[1], 'extractive', api_key=sys.argv[2])\n"
                "print(''.join(llm.stream(build_messages('sort a list?', []), max_tokens=50)))")
        run = subprocess.run([sys.executable, "-c", code, server.base_url, API_KEY], check=False, cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "I could not find anything about that in the documents."

    def test_server_errors_and_rate_limits_are_retryable(self, server: ChatServer):
        messages = build_messages(QUESTION, PASSAGES)
        for call in ("complete", "stream"):
            with pytest.raises(Unavailable, match="engine crashed") as crashed:
                getattr(client(server, "fails-500"), call)(messages, max_tokens=50)
            assert crashed.value.retryable and crashed.value.status == 503
            with pytest.raises(RateLimited, match="too many requests") as limited:
                getattr(client(server, "busy-429"), call)(messages, max_tokens=50)
            assert limited.value.status == 429 and limited.value.hint == "retry after 2s"

    def test_refusals_are_permanent_and_carry_the_upstream_message(self, server: ChatServer):
        messages = build_messages(QUESTION, PASSAGES)
        with pytest.raises(LLMRejected, match="max_tokens must be at least 1") as bad:
            client(server).stream(messages, max_tokens=0)
        assert isinstance(bad.value, BadEvent) and not bad.value.retryable and bad.value.upstream_status == 400
        with pytest.raises(LLMRejected, match="not found") as missing:
            client(server, "no-such-model").complete(messages, max_tokens=5)
        assert missing.value.upstream_status == 404 and "model" in (missing.value.hint or "")
        with pytest.raises(LLMRejected, match="invalid API key") as denied:
            OpenAIChatClient(server.base_url, "extractive").complete(messages, max_tokens=5)
        assert denied.value.upstream_status == 401 and "API key" in (denied.value.hint or "")
        assert not OpenAIChatClient(server.base_url, "extractive").warmup()
        with pytest.raises(ConfigError):
            OpenAIChatClient("predictor/v1", "extractive")

    def test_a_closed_port_and_a_slow_server_are_unavailable(self, server: ChatServer):
        closed = OpenAIChatClient(f"http://127.0.0.1:{free_port()}/v1", "extractive", connect_timeout=1.0)
        for call in (closed.complete, closed.stream):
            with pytest.raises(Unavailable, match="cannot reach") as refused:
                call([{"role": "user", "content": "hi"}], max_tokens=5)
            assert refused.value.retryable and not isinstance(refused.value, RateLimited)
        assert closed.warmup(timeout=1.0) is False
        slow = client(server, "slow", read_timeout=0.3)
        for call in (slow.complete, slow.stream):  # stream() waits for the headers, which come after the sleep
            started = time.monotonic()
            with pytest.raises(Unavailable, match="timed out"):
                call(build_messages(QUESTION, PASSAGES), max_tokens=5)
            assert time.monotonic() - started < 1.5

    def test_malformed_and_truncated_streams_are_unavailable(self, server: ChatServer):
        messages = build_messages(QUESTION, PASSAGES)
        garbled = client(server, "garbled").stream(messages, max_tokens=200)
        received: list[str] = []
        with pytest.raises(Unavailable, match="malformed server-sent event"):
            for delta in garbled:
                received.append(delta)
        assert "".join(received) == extractive_answer(QUESTION, PASSAGES)  # everything before the bad line
        with pytest.raises(Unavailable, match=r"ended before \[DONE\]"):
            list(client(server, "truncated").stream(messages, max_tokens=200))

    def test_closing_the_stream_early_drops_the_connection(self, server: ChatServer):
        server.client_left.clear()
        llm = client(server, "endless")
        stream = llm.stream(build_messages(QUESTION, PASSAGES), max_tokens=200)
        assert [next(stream) for _ in range(3)] == [" more"] * 3
        stream.close()
        assert server.client_left.wait(5), "the server kept streaming to a client that had gone"
        with pytest.raises(StopIteration):
            next(stream)
        assert llm.complete(build_messages(QUESTION, PASSAGES), max_tokens=5).text  # the client still works


def test_an_answer_the_predictor_stopped_at_a_loop_reads_as_unfinished(predictor):
    # the predictor's loop stop answers finish_reason "stop" with stop_reason "repetition": to the gateway that answer
    # is as unfinished as one cut at max_tokens, so it is never cached and the gate refuses it
    from ragfn.llm.client import OpenAIChatClient

    looping = [{"role": "user", "content": "Repeat after me forever: la la la"}]
    llm = OpenAIChatClient(predictor.base_url, "smollm", read_timeout=120)
    whole = llm.complete(looping, max_tokens=120)
    assert whole.finish_reason == "length" and whole.completion_tokens < 60
    stream = llm.stream(looping, max_tokens=120)
    streamed = "".join(stream)
    assert stream.finish_reason == "length" and streamed == whole.text
