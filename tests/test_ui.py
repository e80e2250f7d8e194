"""The chat's logic with `streamlit.testing.v1.AppTest`, against the real `ragfn dev` gateway (tests/conftest.py)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time

import pytest
from conftest import CHAT_REDIS_URL, REPO, free_port, wait_http
from streamlit.testing.v1 import AppTest

from ui.safe_markdown import SafeMarkdown

pytestmark = pytest.mark.e2e

APP = str(REPO / "ui" / "app.py")
SORTING = ("# Sorting\n\nTo sort a list in place, call list.sort(). The sorted() built-in returns a new sorted list "
           "and leaves the original alone.\n\n## Keys\n\nBoth accept a key function, such as str.lower, that is "
           "called on each element before comparing.\n")


def app(gateway_url: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("RAGFN_UI_GATEWAY_URL", gateway_url)
    monkeypatch.setenv("RAGFN_UI_POLL_SECONDS", "0.2")
    return AppTest.from_file(APP, default_timeout=180).run()


def sign_in(at: AppTest, key: str) -> AppTest:
    at.sidebar.text_input[0].input(key)
    at.sidebar.button[0].click()
    return at.run()


def texts(at: AppTest) -> str:
    """Everything the page says, in one string."""
    parts = [element.value for kind in ("markdown", "caption", "text", "info", "warning", "error", "success")
             for element in getattr(at, kind)]
    parts += [element.value for element in at.get("html")]  # answers and citations: ui/safe_markdown.py
    parts += [str(element.value) for element in at.sidebar.markdown]
    return "\n".join(str(p) for p in parts)


def progress_texts(at: AppTest) -> list[str]:
    return [element.proto.text for element in at.get("progress")]


@pytest.fixture
def chat(dev_chat, monkeypatch):
    at = sign_in(app(dev_chat.state["ask"], monkeypatch), dev_chat.key)
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    return at


def test_a_wrong_key_is_refused_with_the_reason(dev_chat, monkeypatch):
    at = sign_in(app(dev_chat.state["ask"], monkeypatch), "not-a-key")
    assert "Sign-in refused" in at.error[0].value and "unknown API key" in at.error[0].value
    assert "Signed in as" not in texts(at)


def test_signing_in_shows_who_and_an_empty_collection_says_how_to_fill_it(chat):
    assert "Signed in as **key:dev** · tenant (untenanted)" in texts(chat)
    chat.sidebar.text_input(key="new_collection").input("not a name!").run()
    assert "invalid collection name 'not a name!'" in chat.sidebar.error[0].value
    chat.sidebar.text_input(key="new_collection").input("ui-empty").run()
    assert chat.sidebar.selectbox(key="collection").value == "ui-empty"
    assert any("No documents in **ui-empty** yet" in info.value for info in chat.info)
    assert "ragfn ingest --collection ui-empty PATH" in chat.info[0].value


def test_an_upload_is_indexed_then_answers_stream_with_citations_badges_and_feedback(chat, dev_chat):
    import redis

    chat.sidebar.text_input(key="new_collection").input("ui-upload").run()
    chat.sidebar.file_uploader[0].set_value(("sorting.md", SORTING.encode(), "text/markdown"))
    chat.run()
    seen = set(progress_texts(chat))
    deadline = time.monotonic() + 120
    while not any("indexed," in text for text in progress_texts(chat)):
        assert time.monotonic() < deadline, (seen, texts(chat))
        time.sleep(0.3)
        chat.run()
        seen |= set(progress_texts(chat))
    assert any(text.startswith("sorting.md: queued") or "indexing" in text for text in seen), seen
    assert "sorting.md: indexed, " in progress_texts(chat)[0]
    assert not any("No documents in" in info.value for info in chat.info)  # the page knows the index filled

    chat.chat_input[0].set_value("How do I sort a list in place?").run()
    assistant = chat.chat_message[1]
    answer = "\n".join(m.value for m in assistant.get("html"))
    assert answer.strip(), texts(chat)
    timing = [c.value for c in assistant.caption if c.value.startswith("⏱")]
    assert timing and "retrieve" in timing[0] and "total" in timing[0]
    # each citation is a popover labelled [n] holding its passage: source, section, text
    labels = [block.proto.popover.label for block in assistant.get("popover")]
    final = chat.session_state["history"]["ui-upload"][0]["final"]
    assert labels and all("sorting.md" in label for label in labels), (labels, answer, final)
    assert "list.sort()" in texts(chat) and "<b>Source</b> <code>file://" in texts(chat)
    assert "<b>Section</b> Sorting" in texts(chat)
    # what stays on the page is the final text: the model's answer, or the gate's replacement for it
    turn = chat.session_state["history"]["ui-upload"][0]
    assert turn["text"].strip() and SafeMarkdown().html(turn["text"]) in answer, (turn["text"], answer)
    if "ungrounded-answer" in (final["degraded"] or ""):
        assert any("answering from the passages" in c.value for c in assistant.caption), texts(chat)
    badges = " ".join(m.value for m in assistant.markdown if "badge[" in m.value)
    assert ("sources matched by ragfn" in badges) == final["citations_inferred"], (badges, final)
    assert ("degraded" in badges) == bool(final["degraded"]) and ("cache hit" in badges) == (final["cache"] == "hit")
    assert ("token limit" in badges) == final["truncated"]
    chat.feedback[0].set_value(1).run()  # thumbs up
    assert "Thanks: your feedback was recorded." in texts(chat)
    chat.text_input(key=[w.key for w in chat.text_input if w.key and w.key.startswith("comment-")][0]).input(
        "clear and short").run()
    assert "Thanks: rating and comment recorded." in texts(chat)
    from ragfn.gateway.feedback import FeedbackStore

    latest = FeedbackStore(redis.Redis.from_url(CHAT_REDIS_URL)).recent(1)[0]  # what the notebooks read
    assert (latest["rating"], latest["comment"], latest["question"]) == ("up", "clear and short",
                                                                        "How do I sort a list in place?")
    stats = subprocess.run([sys.executable, "-m", "ragfn", "stats", "--dev", "--json"], cwd=dev_chat.root,
                           env=dev_chat.env, capture_output=True, text=True, timeout=120)
    assert json.loads(stats.stdout)["feedback"]["up"] >= 1, stats.stderr


def test_a_gateway_that_is_down_is_said_plainly(monkeypatch):
    at = sign_in(app(f"http://127.0.0.1:{free_port()}", monkeypatch), "any-key")
    assert "The gateway is down" in at.error[0].value and "ragfn dev" in at.error[0].value


@contextlib.contextmanager
def second_gateway(dev_chat, log_dir, **settings: str):
    """Another ask gateway over the same dev stack (its key, index and functions), with other settings."""
    port = free_port()
    env = {k: v for k, v in dev_chat.env.items() if k != "RAGFN_REDIS_URL"} | {
        "RAGFN_API_KEYS_FILE": str(dev_chat.home / "dev-keys.json"), "RAGFN_CHROMA_URL": dev_chat.state["chroma_url"],
        "RAGFN_RETRIEVE_URL": dev_chat.state["functions"]["ragfn-retrieve"],
        "RAGFN_SERVICE_KEYS_FILE": str(dev_chat.home / "service-keys"), **settings}
    with (log_dir / "ask.log").open("wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "ragfn.serve.gateway_app", "--port", str(port)],
                                  cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/", process=server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_rate_limit_says_when_to_try_again(dev_chat, monkeypatch, tmp_path):
    """A gateway allowing two requests a minute: one answer, a rating, then the limit."""
    import redis

    limits = redis.Redis.from_url("redis://127.0.0.1:6379/14")
    limits.delete("rl:")  # the untenanted space's window
    with second_gateway(dev_chat, tmp_path, RAGFN_RATE_LIMIT="2", RAGFN_REDIS_URL="redis://127.0.0.1:6379/14") as url:
        at = sign_in(app(url, monkeypatch), dev_chat.key)  # who-am-I reads do not count
        at.chat_input[0].set_value("What is a list?").run()
        at.chat_input[0].set_value("What is a tuple?").run()
        assert not at.warning, [w.value for w in at.warning]
        at.chat_input[0].set_value("What is a set?").run()
        warning = [w.value for w in at.warning]
        assert any("Rate limit reached" in w and "Try again in" in w for w in warning), (warning, texts(at))
    limits.delete("rl:")


def test_feedback_without_redis_says_what_it_needs(dev_chat, monkeypatch, tmp_path):
    with second_gateway(dev_chat, tmp_path) as url:
        at = sign_in(app(url, monkeypatch), dev_chat.key)
        at.chat_input[0].set_value("What is a list?").run()
        at.feedback[0].set_value(0).run()  # thumbs down
        errors = [e.value for e in at.error]
        assert any("feedback is kept in Redis" in e and "RAGFN_REDIS_URL" in e for e in errors), (errors, texts(at))
        assert not any("gateway is down" in e for e in errors)  # the gateway is up; its Redis is what is missing
