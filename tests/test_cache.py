"""The semantic cache against the real Redis on 127.0.0.1:6379 (plain Redis, no modules) and the real model."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import redis

from ragfn.cache import CacheScope, RedisCache, conflicting
from ragfn.embedding import FastEmbedder
from ragfn.errors import Unavailable

pytestmark = pytest.mark.integration
ANSWER = {"answer": "Use reversed() or list.reverse() [1].", "citations": [{"source": "file:///faq.md"}]}


@pytest.fixture(scope="module")
def embedder(model_dir):
    model = FastEmbedder("sentence-transformers/all-MiniLM-L6-v2", model_path=str(model_dir))
    model.warm_up()
    return model


@pytest.fixture
def cache():
    client = redis.Redis(host="127.0.0.1", port=6379)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    yield RedisCache(client, threshold=0.85, prefix=prefix)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def scope(tenant: str = "acme", groups: tuple[str, ...] = ("eng",)) -> CacheScope:
    return CacheScope(tenant, groups, "default", "minilm", "smollm2", "p1")


def vector(embedder, text: str) -> np.ndarray:
    return embedder.embed([text])[0]


def put(cache, embedder, question: str, where: CacheScope | None = None) -> None:
    assert cache.store(question, vector(embedder, question), where or scope(), ANSWER, [("default", "file:///faq.md")])


def test_exact_repeat_skips_the_embedder(cache, embedder):
    put(cache, embedder, "How do I reverse a list in Python?")

    def no_embedding(_: str):
        raise AssertionError("an exact hit must not embed")

    hit = cache.lookup("how do I reverse a list in python", scope(), no_embedding)
    assert hit.tier == "exact" and hit.answer == ANSWER


def test_paraphrase_hits_and_guards_stop_negations_numbers_and_names(cache, embedder):
    put(cache, embedder, "How do I reverse a list in Python?")
    put(cache, embedder, "What changed in Python 3.11?")
    put(cache, embedder, "How do I install Django on Windows?")
    embed = lambda text: vector(embedder, text)  # noqa: E731
    hit = cache.lookup("How can I reverse a Python list?", scope(), embed)
    assert hit is not None and hit.tier == "semantic" and hit.similarity >= 0.85
    assert cache.lookup("How do I not reverse a list in Python?", scope(), embed) is None
    assert cache.lookup("What changed in Python 3.12?", scope(), embed) is None
    assert cache.lookup("How do I install Flask on Windows?", scope(), embed) is None
    stats = cache.stats()
    assert stats["hits_semantic"] == 1 and stats["guarded_negation"] == 1 and stats["guarded_number"] == 1
    assert stats.get("guarded_entity", 0) + stats.get("misses", 0) >= 1


def test_scopes_never_share_answers(cache, embedder):
    put(cache, embedder, "How do I reverse a list in Python?", scope("acme"))
    embed = lambda text: vector(embedder, text)  # noqa: E731
    for other in (scope("globex"), scope("acme", ("ops",)), CacheScope("acme", ("eng",), "default", "minilm",
                                                                        "smollm2", "p2")):
        assert cache.lookup("How do I reverse a list in Python?", other, embed) is None


def test_reindexing_a_cited_document_evicts_its_answers_everywhere(cache, embedder):
    put(cache, embedder, "How do I reverse a list in Python?")
    replica = RedisCache(cache.redis, threshold=0.85, prefix=cache.prefix)  # another process, same Redis
    embed = lambda text: vector(embedder, text)  # noqa: E731
    assert replica.lookup("How can I reverse a Python list?", scope(), embed) is not None
    assert cache.invalidate("default", "file:///faq.md") == 1
    assert replica.lookup("How can I reverse a Python list?", scope(), embed) is None
    assert replica.lookup("How do I reverse a list in Python?", scope(), embed) is None
    assert cache.invalidate("default", "file:///faq.md") == 0


def test_degraded_answers_are_never_stored(cache, embedder):
    question = "How do I reverse a list in Python?"
    assert not cache.store(question, vector(embedder, question), scope(), ANSWER | {"degraded": "cold-start"}, [])
    assert cache.lookup(question, scope(), lambda t: vector(embedder, t)) is None
    assert cache.stats()["refused_degraded"] == 1


def test_redis_down_is_unavailable_not_a_crash():
    down = RedisCache(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    with pytest.raises(Unavailable):
        down.lookup("anything", scope(), lambda t: np.zeros(384, dtype=np.float32))


@pytest.mark.unit
def test_conflict_rules():
    assert conflicting("Is Python fast?", "Is Python not fast?") == "negation"
    assert conflicting("Why doesn't this work?", "Why does this work?") == "negation"
    assert conflicting("Top 5 tips", "Top 10 tips") == "number"
    assert conflicting("Install on Linux", "Install on Windows") == "entity"
    assert conflicting("How do I sort a list?", "how can I sort a list") is None
