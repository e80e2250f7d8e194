"""The in-process cache follows the same rules as the Redis one: scopes, guards, TTL, eviction by document."""

from __future__ import annotations

import numpy as np
import pytest

from ragfn.cache.memory import MemoryCache
from ragfn.cache.redis_cache import CacheScope

pytestmark = pytest.mark.unit
ANSWER = {"answer": "x [1]", "citations": []}


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


SCOPE = CacheScope("acme", ("eng",), "default", "e", "m", "p1")
VECTORS = {"How do I sort a list?": unit(1, 0, 0), "How can I sort a list?": unit(0.99, 0.1, 0),
           "How do I not sort a list?": unit(0.98, 0.15, 0), "Something else": unit(0, 1, 0)}


def test_tiers_scopes_guards_ttl_and_eviction():
    now = [0.0]
    cache = MemoryCache(threshold=0.9, ttl_seconds=10, clock=lambda: now[0])
    assert cache.store("How do I sort a list?", VECTORS["How do I sort a list?"], SCOPE, ANSWER, [("default", "d1")])
    embed = VECTORS.__getitem__
    assert cache.lookup("how do I sort a list", SCOPE, lambda q: 1 / 0).tier == "exact"
    assert cache.lookup("How can I sort a list?", SCOPE, embed).tier == "semantic"
    assert cache.lookup("How do I not sort a list?", SCOPE, embed) is None
    assert cache.lookup("Something else", SCOPE, embed) is None
    other = CacheScope("globex", ("eng",), "default", "e", "m", "p1")
    assert cache.lookup("How do I sort a list?", other, embed) is None
    assert not cache.store("q", unit(1, 0, 0), SCOPE, ANSWER | {"degraded": "x"}, [])
    now[0] = 11.0
    assert cache.lookup("How do I sort a list?", SCOPE, embed) is None  # expired
    now[0] = 0.0
    assert cache.invalidate("default", "d1") == 1
    assert cache.lookup("How do I sort a list?", SCOPE, embed) is None
    assert cache.stats()["guarded_negation"] == 1 and cache.stats()["refused_degraded"] == 1


def test_bounded_size_drops_the_oldest():
    cache = MemoryCache(max_entries=2)
    for n, question in enumerate(["a one", "b two", "c three"]):
        cache.store(question, unit(1, n, 0), SCOPE, ANSWER, [])
    assert cache.lookup("a one", SCOPE, lambda q: unit(0, 0, 1)) is None
    assert cache.lookup("c three", SCOPE, lambda q: 1 / 0).tier == "exact"


def test_a_changed_cited_document_stops_serving_the_answer():
    versions = {"d1": "v1"}
    cache = MemoryCache(versions_of=lambda cited: [versions.get(doc) for _, doc in cited])
    cache.store("How do I sort a list?", VECTORS["How do I sort a list?"], SCOPE, ANSWER, [("default", "d1")])
    assert cache.lookup("How do I sort a list?", SCOPE, VECTORS.__getitem__) is not None
    versions["d1"] = "v2"  # re-indexed by another process: no event reaches this one
    assert cache.lookup("How do I sort a list?", SCOPE, VECTORS.__getitem__) is None
    assert cache.lookup("How can I sort a list?", SCOPE, VECTORS.__getitem__) is None
