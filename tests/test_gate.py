"""The groundedness gate (ragfn.gateway.gate): its checks, and the gateway replacing what fails them, in JSON and in
a stream, with SmolLM2 on the real predictor and with misbehaving OpenAI-compatible servers (tests/chat_server.py)."""

from __future__ import annotations

import pytest
from chat_server import API_KEY
from conftest import ask
from test_cold_start import events

from ragfn.gateway.answer_quality import repetition_loop
from ragfn.gateway.gate import AnswerGate, LoopWatch
from ragfn.llm.client import WORD

PASSAGE = "To sort a list in place, call list.sort(). The sorted() built-in returns a new sorted list."
LOOP = "int main() {\n" + "delete[] arr;\n" * 20  # the loop the issue saw SmolLM2 write
QUESTION = "How do I sort a list?"


@pytest.mark.unit
@pytest.mark.parametrize(("answer", "truncated", "reason"), [
    ("", False, "empty"),
    (" [1] ...", False, "empty"),
    (LOOP, True, "repetition"),
    ("Sure", True, "cut-off"),  # nothing judgeable, and stopped at max_tokens
    ("A digital wallet manages financial transactions securely.", True, "cut-off"),  # nothing supported
    ("A digital wallet manages financial transactions securely. Banks love it.", False, "unsupported"),
    ("Call list.sort() to sort the list in place [1]. Wallets manage financial transactions securely.", False, None),
    ("Call list.sort() to sort the list in place [1]. The sorted() built-in returns a new list.", False, None),
    ("Call list.sort() to sort the list in place [1]. The sorted() built-in", True, "cut-off"),  # incomplete
    ("Yes.", False, None),  # nothing to judge, nothing wrong
    # the Debian FAQ answer that passed the share test: every word is the passages', and it says it twice
    ("Debian GNU/Linux is a Linux distribution developed by the GNU Project, and it is a free, open-source operating "
     "system that is based on the GNU project. Debian is a Linux distribution that is designed to be a free, "
     "open-source operating system that is based on the GNU project.", False, "repetition"),
])
def test_the_gate_refuses_loops_empty_cut_offs_and_unsupported_answers(answer, truncated, reason):
    debian = "Debian GNU/Linux is a free operating system, a Linux distribution based on the GNU project's software."
    verdict = AnswerGate(0.5).check(answer, {1: PASSAGE, 2: debian}, truncated=truncated)
    assert (verdict.passed, verdict.reason) == (reason is None, reason)
    assert (verdict.message == "") == (reason is None)


@pytest.mark.unit
def test_kept_cut_offs_pass_only_when_they_said_something_supported():
    keep = AnswerGate(0.5, keep_cut_offs=True)
    assert keep.check("Call list.sort() to sort the list in place [1]. The sorted() built-in", {1: PASSAGE},
                      truncated=True).passed
    assert keep.check("Sure", {1: PASSAGE}, truncated=True).reason == "cut-off"
    assert keep.check("A digital wallet manages financial transactions securely.", {1: PASSAGE},
                      truncated=True).reason == "cut-off"


@pytest.mark.unit
def test_an_answer_that_cites_nothing_supports_nothing():
    assert AnswerGate().check("Call list.sort() to sort a list in place.", {}, truncated=False).reason == "unsupported"


@pytest.mark.unit
def test_a_threshold_of_zero_keeps_only_the_degeneration_checks():
    unsupported = "A digital wallet manages financial transactions securely."
    assert AnswerGate(0.0).check(unsupported, {1: PASSAGE}, truncated=False).passed
    assert AnswerGate(0.0).check(LOOP, {1: PASSAGE}, truncated=False).reason == "repetition"
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        AnswerGate(1.5)


@pytest.mark.unit
def test_a_loop_is_seen_while_it_streams_and_an_answer_is_not():
    watch = LoopWatch()
    seen = next(i for i, delta in enumerate(WORD.findall(LOOP * 3), 1) if watch.add(delta))
    first_loop = next(n for n in range(1, 200) if repetition_loop("".join(WORD.findall(LOOP)[:n])))
    assert first_loop <= seen <= first_loop + 1  # its last token counts once the next delta shows it is whole
    calm = LoopWatch()
    assert not any(calm.add(delta) for delta in WORD.findall(PASSAGE * 2 + " It also takes a key function."))


@pytest.mark.unit
def test_deltas_that_split_words_are_watched_as_the_whole_text_would_be():
    text = "int main() {\n" + "delete[] arr;\n" * 3 + "return 0; }"  # three turns: not yet a loop
    for cut in (1, 2, 3, 5, 7):
        watch = LoopWatch()
        assert not any(watch.add(text[i:i + cut]) for i in range(0, len(text), cut)), cut
        assert watch.add("delete[] arr;\n" * 4 + " ")  # now it is, however the text came in


@pytest.mark.unit
def test_watching_a_long_stream_looks_at_each_token_once():
    from ragfn.gateway.answer_quality import TOKEN

    words = " ".join(f"w{n % 997}x{n % 13}" + ("." if n % 11 == 0 else "") for n in range(4096))
    watch, seen = LoopWatch(), []
    add = watch.detector.add
    watch.detector.add = lambda token: (seen.append(token), add(token))  # type: ignore[method-assign]
    assert not any(watch.add(delta) for delta in WORD.findall(words))
    # a rescan of the whole text every few deltas was quadratic (about 10 s of CPU for these 4,096 words); each
    # token is now added once, and adding one costs at most LOOP_MAX_RUN * LOOP_REPEATS comparisons
    assert seen == TOKEN.findall(words)[:-1]  # all but the last, which waits for a delta that shows it is whole


@pytest.mark.integration
def test_a_looping_stream_is_stopped_at_the_loop_and_replaced_by_the_extractive_answer(gateway, chat_server):
    client, _ = gateway
    # "endless" streams " more" for 30 s: a loop from its fourth token
    app = client(RAGFN_LLM_URL=chat_server.base_url, RAGFN_LLM_SERVED_NAME="endless", RAGFN_LLM_API_KEY=API_KEY)
    chat_server.client_left.clear()
    streamed = events(ask(app, QUESTION, stream=True))
    names = [name for name, _ in streamed]
    tokens = [data for name, data in streamed if name == "token"]
    assert names[-3:] == ["replace", "citations", "final"] and len(tokens) <= 6  # a loop from the fourth " more"
    assert chat_server.client_left.wait(5)  # generation upstream was cancelled, not run on to max_tokens
    replace, final = dict(streamed)["replace"], dict(streamed)["final"]
    assert replace["degraded"] == "ungrounded-answer" and replace["reason"] == "repetition"
    assert "loop" in replace["message"] and "[1]" in replace["text"] and "list.sort()" in replace["text"]
    assert [c["n"] for c in dict(streamed)["citations"]] == [1]
    assert final["degraded"] == "ungrounded-answer" and final["gate"]["passed"] is False
    assert (final["model"], final["provider"], final["truncated"]) == ("extractive", "extractive", False)
    assert final["timings_ms"]["gate"] >= 0
    again = events(ask(app, QUESTION, stream=True))  # an ungrounded answer was never cached
    assert dict(again)["final"]["cache"] == "miss" and dict(again)["replace"] == replace


@pytest.mark.integration
def test_a_grounded_model_answer_passes_and_is_cached_under_its_model(gateway, chat_server):
    client, _ = gateway
    # served as "extractive" by a remote server: a model like any other to the gateway, whose answers are grounded
    app = client(RAGFN_LLM_URL=chat_server.base_url, RAGFN_LLM_SERVED_NAME="extractive", RAGFN_LLM_API_KEY=API_KEY)
    first = ask(app, QUESTION).get_json()
    assert first["degraded"] is None and first["gate"] == {"passed": True, "reason": None, "groundedness": 1.0}
    assert (first["model"], first["provider"]) == ("extractive", "primary")
    streamed = events(ask(app, QUESTION, stream=True))
    assert "replace" not in dict(streamed) and dict(streamed)["final"]["cache"] == "hit"
    assert dict(streamed)["final"]["model"] == "extractive" and dict(streamed)["final"]["gate"] is None


@pytest.mark.integration
def test_smollm2_answers_that_fail_the_gate_are_never_shown(gateway, predictor):
    client, _ = gateway
    gated = client(RAGFN_LLM_URL=predictor.base_url, RAGFN_LLM_SERVED_NAME="smollm", RAGFN_LLM_TIMEOUT_SECONDS="300")
    # one token can say nothing the passages support: the gate must refuse it, whatever the token
    cut = ask(gated, QUESTION, max_tokens=1).get_json()
    assert cut["degraded"] == "ungrounded-answer" and cut["gate"]["reason"] in ("cut-off", "empty")
    assert (cut["model"], cut["provider"]) == ("extractive", "extractive")
    streamed = events(ask(gated, QUESTION, max_tokens=1, stream=True))
    assert [name for name, _ in streamed][-3:] == ["replace", "citations", "final"]
    assert dict(streamed)["replace"]["text"] == cut["answer"]  # the same replacement, streamed or not
    extractive = ask(client(RAGFN_LLM_URL=""), QUESTION, max_tokens=1).get_json()  # no model: the engine itself
    assert cut["answer"] == extractive["answer"] and cut["truncated"] == extractive["truncated"]
    assert extractive["gate"] is None and extractive["provider"] == "extractive"
    # a longer answer: whatever SmolLM2 writes, what is shown is no loop, and a refusal names its reason
    answer = ask(gated, QUESTION, max_tokens=96).get_json()
    assert not repetition_loop(answer["answer"]) and answer["gate"] is not None
    assert (answer["degraded"] == "ungrounded-answer") == (not answer["gate"]["passed"])
    assert answer["model"] == ("smollm" if answer["gate"]["passed"] else "extractive")
    ungated = client(RAGFN_LLM_URL=predictor.base_url, RAGFN_ANSWER_GATE="false")  # the model's answer as written
    raw = ask(ungated, QUESTION, max_tokens=1).get_json()
    assert raw["degraded"] is None and raw["gate"] is None and raw["truncated"] and raw["model"] == "smollm"


@pytest.mark.integration
def test_the_prompt_version_is_a_setting_that_names_what_is_wrong(gateway, chat_server):
    client, _ = gateway
    app = client(RAGFN_LLM_URL=chat_server.base_url, RAGFN_LLM_SERVED_NAME="extractive", RAGFN_LLM_API_KEY=API_KEY,
                 RAGFN_PROMPT_VERSION="v3")
    assert ask(app, QUESTION).get_json()["degraded"] is None
    wrong = ask(client(RAGFN_PROMPT_VERSION="v9"), QUESTION)
    assert wrong.status_code == 500 and "v9" in wrong.get_json()["message"] and "v3" in wrong.get_json()["hint"]


@pytest.mark.unit
def test_a_token_that_never_ends_is_counted_not_re_read():
    watch, seen = LoopWatch(), []
    add = watch.detector.add
    watch.detector.add = lambda token: (seen.append(token), add(token))  # type: ignore[method-assign]
    for _ in range(4096):  # a line of dashes, one delta at a time, which no loop rule stops
        watch.add("-" * 16)
    assert len(watch.pending) <= 64 and sum(map(len, seen)) + len(watch.pending) == 16 * 4096


@pytest.mark.integration
def test_a_server_that_ignores_max_tokens_is_stopped_and_its_answer_counts_as_cut_off(gateway, chat_server):
    client, _ = gateway
    # "verbose" streams for 30 s and answers 20,000 words whatever max_tokens says; the gate is off, so nothing
    # else would stop it
    app = client(RAGFN_LLM_URL=chat_server.base_url, RAGFN_LLM_SERVED_NAME="verbose", RAGFN_LLM_API_KEY=API_KEY,
                 RAGFN_ANSWER_GATE="false")
    chat_server.client_left.clear()
    streamed = events(ask(app, QUESTION, stream=True, max_tokens=8))
    assert len([name for name, _ in streamed if name == "token"]) == 9 and dict(streamed)["final"]["truncated"]
    assert chat_server.client_left.wait(5)  # and the upstream was told to stop
    whole = ask(app, QUESTION, max_tokens=8).get_json()
    assert len(whole["answer"]) == 64 * 8 and whole["truncated"] and whole["cache"] == "miss"
