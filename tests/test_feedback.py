"""Answer feedback through the ask function: rate your own answers, never another tenant's; counts in `ragfn stats`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis
from conftest import REDIS_URL, REPO, ask

pytestmark = pytest.mark.integration


def rate(app, answer_id, rating="up", key="key-acme", **extra):
    return app.post("/v1/feedback", json={"answer_id": answer_id, "rating": rating, **extra},
                    headers={"Authorization": f"Bearer {key}"})


def test_an_answer_can_be_rated_once_by_its_own_tenant(gateway, monkeypatch):
    client, root = gateway
    monkeypatch.setenv("RAGFN_CACHE_PREFIX", "fbtest")
    app = client(RAGFN_REDIS_URL=REDIS_URL)
    answer = ask(app, "How do I sort a list?").get_json()
    streamed = ask(app, "What does sorted() return?", stream=True).get_data(as_text=True)
    final = json.loads(streamed.strip().split("\n\n")[-1].split("\n", 1)[1].removeprefix("data: "))
    assert len(answer["answer_id"]) == 32 and final["answer_id"] != answer["answer_id"]

    first = rate(app, answer["answer_id"], "down", comment="too short")
    assert first.status_code == 200 and first.get_json()["replaced"] is None
    again = rate(app, answer["answer_id"], "up")  # a change of mind replaces the rating, not adds one
    assert again.get_json() == {"answer_id": answer["answer_id"], "rating": "up", "replaced": "down"}
    assert rate(app, final["answer_id"], "down").status_code == 200

    stolen = rate(app, answer["answer_id"], "down", key="key-globex")
    assert stolen.status_code == 404 and "no answer" in stolen.get_json()["message"]
    assert rate(app, "0" * 32).status_code == 404
    bad = rate(app, answer["answer_id"], "meh")
    assert bad.status_code == 400 and "rating" in bad.get_json()["message"]
    assert rate(app, answer["answer_id"], "up", key="nope").status_code == 401

    from ragfn.gateway.feedback import FeedbackStore

    store = FeedbackStore(redis.Redis.from_url(REDIS_URL), prefix="fbtest")
    assert store.counts("acme") == {"up": 1, "down": 1} and store.counts("globex") == {"up": 0, "down": 0}
    newest = store.recent(tenant="acme")[0]
    assert newest["question"] == "What does sorted() return?" and newest["rating"] == "down"
    assert newest["collection"] == "default" and newest["answer"] and newest["cache"] == "miss"
    assert (newest["model"], newest["prompt_version"], newest["cached_question"]) == ("extractive", "v2", None)

    # a down-rated cache hit names the cached question it was served for: a candidate labelled pair
    hit = ask(app, "how do I sort a list").get_json()
    assert hit["cache"] == "hit", hit
    assert rate(app, hit["answer_id"], "down", comment="wrong question matched").status_code == 200
    rated = store.recent(tenant="acme")[0]
    assert (rated["question"], rated["cached_question"]) == ("how do I sort a list", "How do I sort a list?")
    assert rated["cache"] == "hit" and rated["cache_similarity"] == 1.0

    stats = subprocess.run([sys.executable, "-m", "ragfn", "stats", "--json"], cwd=root, capture_output=True,
                           text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                                                        "RAGFN_HOME": str(root / "stats-home"),
                                                        "RAGFN_REDIS_URL": REDIS_URL, "RAGFN_CACHE_PREFIX": "fbtest"})
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["feedback"] == {"up": 1, "down": 2}


def test_without_redis_feedback_is_refused_with_the_reason(gateway):
    client, _ = gateway
    app = client()
    answer = ask(app, "How do I sort a list?").get_json()
    refused = rate(app, answer["answer_id"])
    assert refused.status_code == 503 and "RAGFN_REDIS_URL" in refused.get_json()["hint"]


def test_remembered_answers_are_capped_per_tenant():
    """bench/soak.py: one key per answer for 7 days grew Redis without any bound but time. The oldest go first."""
    from ragfn.core.errors import ObjectNotFound
    from ragfn.gateway.feedback import AnsweredQuestion, FeedbackStore

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter("fbcap:*"):
        client.delete(key)
    store = FeedbackStore(client, prefix="fbcap", max_answers=3)
    for n in range(5):
        store.remember(AnsweredQuestion(f"a{n}", "acme", "default", f"q{n}", "answer", "miss", None))
    store.remember(AnsweredQuestion("g0", "globex", "default", "q", "answer", "miss", None))
    for gone in ("a0", "a1"):
        with pytest.raises(ObjectNotFound):
            store.rate(gone, "acme", "up")
    assert store.rate("a4", "acme", "up")["rating"] == "up" and store.rate("g0", "globex", "down")
    assert len(list(client.scan_iter("fbcap:fb:answer:*"))) == 4  # three of acme's, one of globex's
    assert all(client.ttl(key) > 0 for key in client.scan_iter("fbcap:fb:answers:*"))


def test_concurrent_writers_keep_exactly_the_cap():
    """Each writer trimmed the excess it had counted itself, so writers racing each other evicted too many."""
    import threading

    from ragfn.gateway.feedback import AnsweredQuestion, FeedbackStore

    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter("fbrace:*"):
        client.delete(key)
    store = FeedbackStore(client, prefix="fbrace", max_answers=50)

    def write(worker: int) -> None:
        for n in range(100):
            store.remember(AnsweredQuestion(f"w{worker}-{n}", "acme", "default", "q", "answer", "miss", None))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert client.zcard("fbrace:fb:answers:acme") == 50
        assert len(list(client.scan_iter("fbrace:fb:answer:*", count=1000))) == 50
    finally:
        for key in client.scan_iter("fbrace:*"):
            client.delete(key)
