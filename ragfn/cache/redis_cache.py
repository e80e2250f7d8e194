"""A semantic answer cache on plain Redis: exact and semantic tiers, partitioned by scope, evicted by document.

Keys (prefix `rc` by default):
    {p}:{scope}:e:{id}      hash  question, answer JSON, cited documents, exact key       (expires with the TTL)
    {p}:{scope}:x:{sha}     str   entry id of an exact (normalised) question               (expires with the TTL)
    {p}:{scope}:vec         hash  entry id -> float32 question vector
    {p}:{scope}:t           zset  entry id -> when it expires: what `vec` may still hold
    {p}:{scope}:gen         int   the scope's change counter, bumped by every write and eviction
    {p}:{scope}:log         zset  entry id -> the generation that last changed its vector, for the last `LOG_SPAN`
    {p}:cites:{coll}:{doc}  zset  "{scope}:{id}" of every live entry citing that document -> when it expires
                                  (`{p}:doc:{coll}:{doc}`, a set without expiry times, is read and removed too)
    {p}:stats               hash  hit/miss/guard counters (a fixed set of fields)
No Redis module is needed: each process keeps a scope's vectors in memory and compares them with numpy. A process
that is behind reads only the ids the log names since its generation (all of `vec` when it is further behind than
the log reaches). A fresh `gen` starts at the server's clock in microseconds, not at 1, so a scope that expired and
came back can never look like the one a process still holds; and a process whose row count differs from `vec`'s at
the same generation (a restart that lost writes, an evicted key: the manifest's Redis runs `volatile-lru`) reads
the scope again. Not detected: a rollback followed by exactly as many changes, ending with as many rows; a stale
row only costs a miss, since an entry's id is its question's, and so is its vector.

Every key is bounded (Redis 7.0 has no per-field expiry, so `vec` is kept in step with `t`): each store removes the
scope's expired entries and, past `max_entries`, its oldest, and a document's citing entries that have expired; a
scope's `vec`, `t`, `gen` and `log` and a document's `cites` expire a TTL after their last write. A full Redis would
otherwise refuse every write, the cache with it. Each process keeps the vectors of the scopes it used last, up to
`max_vectors` rows in all.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ragfn.cache.guard import conflicting
from ragfn.cache.vectors import HeldVectors
from ragfn.core.errors import Unavailable

# Sentence punctuation only: a "." or "," between digits (3.11, 1,000) and every operator or sign stay, so "C" and
# "C++", "-22" and "22", "x == y" and "x != y" never share the exact tier, which the guard does not check.
_PUNCTUATION = re.compile(r"(?<!\d)[.,]|[.,](?!\d)|[?!](?!=)|[;:\"'`()\[\]{}]")

# Generations a scope's change log reaches back: a process further behind reads the whole scope again.
LOG_SPAN = 4096

# Bumps the generation and logs the changed ids under it, atomically, so a reader that sees generation g finds every
# change up to g in the log; and keeps the scope's four keys expiring together, so the log never outlives the vectors
# it describes. KEYS: gen, log, vec, t. ARGV: ttl, LOG_SPAN, ids...
_BUMP = """
local g = redis.call('INCR', KEYS[1])
if g == 1 then
  local now = redis.call('TIME')
  g = tonumber(now[1]) * 1000000 + tonumber(now[2])
  redis.call('SET', KEYS[1], string.format('%d', g))
end
for i = 3, #ARGV do redis.call('ZADD', KEYS[2], g, ARGV[i]) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%d', g - tonumber(ARGV[2])))
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
return g
"""

# A consistent view of a scope for a process that holds it at generation ARGV[1]: the generation, the row count and,
# when the log reaches back that far, each id changed since with its vector (nil: removed). KEYS: gen, vec, log.
# ARGV: held generation ("" for none), LOG_SPAN.
_CHANGES = """
local raw = redis.call('GET', KEYS[1])
local g = tonumber(raw or '0')
local out = {raw or '0', redis.call('HLEN', KEYS[2])}
local held = tonumber(ARGV[1])
if held == nil or held >= g or g > held + tonumber(ARGV[2]) then return out end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[1], '+inf')) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', KEYS[2], id)
end
return out
"""


@dataclass(frozen=True)
class CacheScope:
    """Everything an answer depends on besides the question: answers never cross a scope."""

    tenant: str | None
    groups: tuple[str, ...]
    collection: str
    embedder: str
    model: str
    prompt_version: str

    def key(self) -> str:
        raw = json.dumps([self.tenant, sorted(set(self.groups)), self.collection, self.embedder, self.model,
                          self.prompt_version])
        return hashlib.sha256(raw.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class CacheHit:
    answer: dict
    question: str  # the cached question the answer was given for
    tier: str  # "exact" | "semantic"
    similarity: float


def normalise(question: str) -> str:
    """The exact tier's key: case, spacing and sentence punctuation do not count; words, numbers and symbols do."""
    return " ".join(_PUNCTUATION.sub(" ", question.lower()).split())


class RedisCache:
    def __init__(self, client, *, threshold: float = 0.9, ttl_seconds: int = 86400, prefix: str = "rc",
                 max_entries: int = 10_000, max_vectors: int = 200_000) -> None:
        self.redis = client
        self.threshold = threshold
        self.ttl = ttl_seconds
        self.prefix = prefix
        self.max_entries = max_entries
        self._vectors = HeldVectors(max_vectors)
        self._bump_script = client.register_script(_BUMP)
        self._changes_script = client.register_script(_CHANGES)

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def lookup(self, question: str, scope: CacheScope, embed: Callable[[str], np.ndarray]) -> CacheHit | None:
        """Exact tier first (no embedding), then the nearest cached question above the threshold, guarded."""
        s = scope.key()
        try:
            exact_id = self.redis.get(self._k(s, "x", self._sha(question)))
            if exact_id is not None:
                entry = self.redis.hgetall(self._k(s, "e", exact_id.decode()))
                if entry:
                    self._count("hits_exact")
                    return CacheHit(json.loads(entry[b"answer"]), entry[b"question"].decode(), "exact", 1.0)
            self._sync(s)
            nearest = self._vectors.nearest(s, np.asarray(embed(question), dtype=np.float32))
            if nearest is None or nearest[1] < self.threshold:
                self._count("misses")
                return None
            best_id, similarity = nearest
            entry = self.redis.hgetall(self._k(s, "e", best_id))
            if not entry:  # expired: forget its vector too
                self._forget(s, [best_id])
                self._count("misses")
                return None
            cached_question = entry[b"question"].decode()
            if reason := conflicting(question, cached_question):
                self._count(f"guarded_{reason}")
                return None
            self._count("hits_semantic")
            return CacheHit(json.loads(entry[b"answer"]), cached_question, "semantic", similarity)
        except self._redis_errors() as exc:
            raise Unavailable(f"semantic cache unavailable: {exc}") from exc

    def store(self, question: str, vector: np.ndarray, scope: CacheScope, answer: dict,
              cited: list[tuple[str, str]]) -> bool:
        """Keep a complete answer; degraded or partial ones are refused. `cited` is [(collection, document_id)]."""
        if answer.get("degraded") or answer.get("partial"):
            self._count("refused_degraded")
            return False
        s, exact = scope.key(), self._sha(question)
        entry_id = hashlib.sha256(f"{s}|{normalise(question)}".encode()).hexdigest()[:20]
        now = time.time()
        try:
            pipe = self.redis.pipeline()
            pipe.hset(self._k(s, "e", entry_id), mapping={"question": question, "answer": json.dumps(answer),
                                                          "exact": exact, "created": now})
            pipe.expire(self._k(s, "e", entry_id), self.ttl)
            pipe.set(self._k(s, "x", exact), entry_id, ex=self.ttl)
            pipe.hset(self._k(s, "vec"), entry_id, np.asarray(vector, dtype="<f4").tobytes())
            pipe.zadd(self._k(s, "t"), {entry_id: now + self.ttl})
            for collection, document_id in cited:
                cites = self._k("cites", collection, document_id)
                pipe.zadd(cites, {f"{s}:{entry_id}": now + self.ttl})
                pipe.zremrangebyscore(cites, "-inf", now)
                pipe.expire(cites, self.ttl)
            self._bump(pipe, s, [entry_id])  # an idle scope goes away once its last entry has expired
            pipe.hincrby(self._k("stats"), "stores", 1)
            pipe.execute()
            self._trim(s, now)
        except self._redis_errors() as exc:
            raise Unavailable(f"semantic cache unavailable: {exc}") from exc
        return True

    def _trim(self, scope: str, now: float) -> None:
        """Drop the scope's expired entries, then its oldest past `max_entries`."""
        times = self._k(scope, "t")
        doomed = [i.decode() for i in self.redis.zrangebyscore(times, "-inf", now)]
        extra = self.redis.zcard(times) - len(doomed) - self.max_entries
        if extra > 0:
            doomed += [i.decode() for i in self.redis.zrange(times, len(doomed), len(doomed) + extra - 1)]
        if not doomed:
            return
        pipe = self.redis.pipeline()
        self._drop(pipe, scope, doomed)
        pipe.zrem(times, *doomed)
        pipe.hdel(self._k(scope, "vec"), *doomed)
        self._bump(pipe, scope, doomed)
        pipe.hincrby(self._k("stats"), "trimmed", len(doomed))
        pipe.execute()

    def invalidate(self, collection: str, document_id: str) -> int:
        """Evict every answer that cites the document (on document.indexed / document.removed)."""
        try:
            return self._invalidate(collection, document_id)
        except self._redis_errors() as exc:
            raise Unavailable(f"semantic cache unavailable: {exc}") from exc

    def _invalidate(self, collection: str, document_id: str) -> int:
        cites, legacy = self._k("cites", collection, document_id), self._k("doc", collection, document_id)
        members = set(self.redis.zrange(cites, 0, -1)) | set(self.redis.smembers(legacy))
        by_scope: dict[str, list[str]] = {}
        for member in members:
            scope, _, entry_id = member.decode().partition(":")
            by_scope.setdefault(scope, []).append(entry_id)
        for scope, entry_ids in by_scope.items():
            pipe = self.redis.pipeline()
            self._drop(pipe, scope, entry_ids)
            pipe.execute()
            self._forget(scope, entry_ids)
        self.redis.delete(cites, legacy)
        self._count("evicted", len(members))
        return len(members)

    def stats(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.redis.hgetall(self._k("stats")).items()}

    # -- internals ---------------------------------------------------------------------------------------------

    def _sync(self, scope: str) -> None:
        """Bring this process's vectors of the scope up to Redis's generation: the logged changes, or all rows.

        The changes come in one consistent read with the generation and the row count. A copy that still differs
        from Redis's count afterwards (data lost in a restart or a failover, an evicted key, a scope that expired
        and came back) is read again whole."""
        held = self._vectors.held(scope)
        reply = self._changes_script(keys=[self._k(scope, part) for part in ("gen", "vec", "log")],
                                     args=["" if held is None else held[0], LOG_SPAN])
        generation, count, pairs = int(reply[0]), int(reply[1]), reply[2:]
        if held == (generation, count):
            return
        if held is not None and held[0] < generation <= held[0] + LOG_SPAN:
            changes = [(pairs[i].decode(), pairs[i + 1]) for i in range(0, len(pairs), 2)]
            applied = self._vectors.update(scope, held[0], changes, generation)
            if applied is None or applied == count:  # another thread moved the scope on, or it now agrees
                return
        pipe = self.redis.pipeline()
        pipe.get(self._k(scope, "gen"))
        pipe.hgetall(self._k(scope, "vec"))
        generation, rows = pipe.execute()
        self._vectors.replace(scope, rows, int(generation or 0))

    def _bump(self, pipe, scope: str, entry_ids: list[str]) -> None:
        self._bump_script(keys=[self._k(scope, part) for part in ("gen", "log", "vec", "t")],
                          args=[self.ttl, LOG_SPAN, *entry_ids], client=pipe)

    def _drop(self, pipe, scope: str, entry_ids: list[str]) -> None:
        """Queue on `pipe` the deletes of these entries and of their exact-tier keys."""
        exacts = [self.redis.hget(self._k(scope, "e", i), "exact") for i in entry_ids]
        for entry_id, exact in zip(entry_ids, exacts, strict=True):
            pipe.delete(self._k(scope, "e", entry_id))
            if exact:
                pipe.delete(self._k(scope, "x", exact.decode()))

    def _forget(self, scope: str, entry_ids: list[str]) -> None:
        pipe = self.redis.pipeline()
        pipe.hdel(self._k(scope, "vec"), *entry_ids)
        self._bump(pipe, scope, entry_ids)
        pipe.execute()

    def _count(self, name: str, by: int = 1) -> None:
        self.redis.hincrby(self._k("stats"), name, by)

    @staticmethod
    def _sha(question: str) -> str:
        return hashlib.sha256(normalise(question).encode()).hexdigest()[:32]

    @staticmethod
    def _redis_errors() -> tuple[type[Exception], ...]:
        import redis

        # every Redis failure: a read-only replica after a failover or an out-of-memory refusal is as much an
        # outage of the cache as a lost connection, and must degrade the answer, not fail it
        return (redis.RedisError,)
