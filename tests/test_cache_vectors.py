"""Each process's copy of a scope's cache vectors follows Redis by the change log (real Redis on 127.0.0.1:6379):
it must always equal what a full read of the scope gives, and read only what changed."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import redis

from ragfn.cache import redis_cache
from ragfn.cache.redis_cache import CacheScope, RedisCache
from ragfn.cache.vectors import ScopeVectors

pytestmark = pytest.mark.integration
SCOPE = CacheScope("acme", ("eng",), "default", "minilm", "smollm2", "p1")
ANSWER = {"answer": "An answer [1].", "citations": [{"source": "file:///a.md"}]}


@pytest.fixture
def client():
    client = redis.Redis(host="127.0.0.1", port=6379)
    yield client
    client.close()


@pytest.fixture
def prefix(client):
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    yield prefix
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(16).astype(np.float32)
    return v / np.linalg.norm(v)


def in_redis(client, prefix: str) -> dict[str, np.ndarray]:
    raw = client.hgetall(f"{prefix}:{SCOPE.key()}:vec")
    return {k.decode(): np.frombuffer(v, dtype="<f4") for k, v in raw.items()}


def assert_same(held: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> None:
    assert held.keys() == truth.keys()
    for entry_id, v in truth.items():
        assert np.array_equal(held[entry_id], v), entry_id


def calls(client, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def miss(cache: RedisCache, rng: np.random.Generator) -> None:
    """A lookup that syncs the scope and finds nothing (a zero vector is near no other)."""
    assert cache.lookup(f"unseen {rng.integers(1 << 30)}?", SCOPE, lambda _: np.zeros(16, np.float32)) is None


def test_a_replica_follows_stores_trims_and_evictions_by_the_log_alone(client, prefix):
    rng = np.random.default_rng(7)
    writer = RedisCache(client, prefix=prefix, max_entries=40)
    reader = RedisCache(client, prefix=prefix)  # another process on the same Redis
    for i in range(30):
        writer.store(f"question {i}?", unit(rng), SCOPE, ANSWER, [("default", f"doc-{i % 5}")])
    miss(reader, rng)  # the first look reads the whole scope
    assert_same(reader._vectors.rows(SCOPE.key()), in_redis(client, prefix))

    def follow() -> None:
        full_reads = calls(client, "hgetall")
        miss(reader, rng)
        assert calls(client, "hgetall") == full_reads, "the replica read the whole scope again"

    for i in range(30, 60):  # past max_entries: each store now trims the oldest
        writer.store(f"question {i}?", unit(rng), SCOPE, ANSWER, [("default", f"doc-{i % 5}")])
        if i % 7 == 0:
            follow()
            assert_same(reader._vectors.rows(SCOPE.key()), in_redis(client, prefix))
    writer.store("question 55?", unit(rng), SCOPE, ANSWER, [])  # an id stored again gets its new vector
    assert writer.invalidate("default", "doc-2") > 0
    follow()
    assert_same(reader._vectors.rows(SCOPE.key()), in_redis(client, prefix))
    assert len(reader._vectors.rows(SCOPE.key())) < 40


def test_a_replica_too_far_behind_reads_the_whole_scope(client, prefix, monkeypatch):
    monkeypatch.setattr(redis_cache, "LOG_SPAN", 3)
    rng = np.random.default_rng(8)
    writer, reader = RedisCache(client, prefix=prefix), RedisCache(client, prefix=prefix)
    writer.store("first?", unit(rng), SCOPE, ANSWER, [])
    miss(reader, rng)
    for i in range(5):  # five generations on: the log no longer reaches back to the reader's
        writer.store(f"question {i}?", unit(rng), SCOPE, ANSWER, [])
    log = f"{prefix}:{SCOPE.key()}:log"
    assert client.zcard(log) <= 4, "the log outgrew its span"
    full_reads = calls(client, "hgetall")
    miss(reader, rng)
    assert calls(client, "hgetall") == full_reads + 1
    assert_same(reader._vectors.rows(SCOPE.key()), in_redis(client, prefix))


def test_a_scope_that_expired_and_came_back_is_never_taken_for_the_held_one(client, prefix):
    rng = np.random.default_rng(9)
    writer, reader = RedisCache(client, prefix=prefix), RedisCache(client, prefix=prefix)
    for i in range(3):
        writer.store(f"old {i}?", unit(rng), SCOPE, ANSWER, [])
    miss(reader, rng)
    for key in client.scan_iter(f"{prefix}:*"):  # the whole scope expires (a TTL idle, or a Redis restart)
        client.delete(key)
    for i in range(2):
        writer.store(f"new {i}?", unit(rng), SCOPE, ANSWER, [])
    generation = int(client.get(f"{prefix}:{SCOPE.key()}:gen"))
    assert generation > 10**15  # a fresh counter starts at the server's clock, far past any old one
    miss(reader, rng)
    assert_same(reader._vectors.rows(SCOPE.key()), in_redis(client, prefix))
    assert len(in_redis(client, prefix)) == 2


def test_scope_vectors_match_a_plain_dict_through_any_sequence_of_changes():
    rng = np.random.default_rng(10)
    held, truth = ScopeVectors(0), {}
    for step in range(2000):
        entry_id = f"id-{rng.integers(60)}"
        if rng.random() < 0.4:
            held.apply([(entry_id, None)], step)
            truth.pop(entry_id, None)
        else:
            v = unit(rng)
            held.apply([(entry_id, v.astype("<f4").tobytes())], step)
            truth[entry_id] = v
        if step % 97 == 0:
            assert_same(held.rows(), truth)
            if truth:
                query = unit(rng)
                best = max(truth, key=lambda k: float(truth[k] @ query))
                assert held.nearest(query)[0] == best
    assert_same(held.rows(), truth)


def test_every_change_keeps_the_scope_keys_expiring_together(client, prefix):
    rng = np.random.default_rng(11)
    cache = RedisCache(client, prefix=prefix, ttl_seconds=600)
    cache.store("kept?", unit(rng), SCOPE, ANSWER, [("default", "doc-a")])
    cache.store("evicted?", unit(rng), SCOPE, ANSWER, [("default", "doc-b")])
    keys = [f"{prefix}:{SCOPE.key()}:{part}" for part in ("gen", "log", "vec", "t")]
    for key in keys:
        client.expire(key, 5)  # as if the last store was long ago
    assert cache.invalidate("default", "doc-b") == 1  # a change after the last store
    assert all(client.ttl(key) > 500 for key in keys), [client.ttl(key) for key in keys]


def test_a_held_copy_unlike_redis_at_the_same_generation_is_read_again(client, prefix):
    """A restart that lost the last writes, then as many new ones: the generation is back where the replica was."""
    rng = np.random.default_rng(12)
    writer, reader = RedisCache(client, prefix=prefix), RedisCache(client, prefix=prefix)
    writer.store("first?", unit(rng), SCOPE, ANSWER, [])
    keys = [f"{prefix}:{SCOPE.key()}:{part}" for part in ("gen", "log", "vec", "t")]
    snapshot = {key: client.dump(key) for key in keys}
    writer.store("second?", unit(rng), SCOPE, ANSWER, [])
    writer.store("third?", unit(rng), SCOPE, ANSWER, [])
    miss(reader, rng)
    for key, value in snapshot.items():  # the rollback
        client.restore(key, 0, value, replace=True)
    writer.store("first?", unit(rng), SCOPE, ANSWER, [])  # two changes: the same generation, one row fewer
    writer.store("fourth?", unit(rng), SCOPE, ANSWER, [])
    assert int(client.get(keys[0])) == reader._vectors.held(SCOPE.key())[0]
    miss(reader, rng)
    assert_same(reader._vectors.rows(SCOPE.key()), in_redis(client, prefix))


def test_a_scope_that_shrank_gives_its_memory_back():
    rng = np.random.default_rng(13)
    held = ScopeVectors(0)
    held.apply([(f"id-{i}", unit(rng).astype("<f4").tobytes()) for i in range(1000)], 1)
    held.apply([(f"id-{i}", None) for i in range(990)], 2)
    assert len(held) == 10 and held._matrix.shape[0] <= 64
    assert set(held.rows()) == {f"id-{i}" for i in range(990, 1000)}
