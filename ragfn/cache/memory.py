"""The semantic cache in process memory, for one machine without Redis: same interface and rules as RedisCache.

No invalidation event reaches it from other processes, so each entry remembers the versions of the documents it
cites and a hit is only served while the index still holds those versions (`versions_of`, one ledger read).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ragfn.cache.redis_cache import CacheHit, CacheScope, conflicting, normalise


@dataclass
class _Entry:
    question: str
    answer: dict
    vector: np.ndarray
    expires: float
    cited: list[tuple[str, str]]
    versions: list[str | None]


class MemoryCache:
    """Bounded by `max_entries` per process (oldest evicted first); lost on restart, never shared between replicas."""

    def __init__(self, *, threshold: float = 0.9, ttl_seconds: int = 86400, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic,
                 versions_of: Callable[[list[tuple[str, str]]], list[str | None]] = lambda cited: []) -> None:
        self.threshold, self.ttl, self.max_entries, self.clock = threshold, ttl_seconds, max_entries, clock
        self.versions_of = versions_of
        self._entries: dict[tuple[str, str], _Entry] = {}  # (scope key, normalised question) -> entry
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def lookup(self, question: str, scope: CacheScope, embed: Callable[[str], np.ndarray]) -> CacheHit | None:
        key, now = (scope.key(), normalise(question)), self.clock()
        with self._lock:
            entry = self._entries.get(key)
        if entry and entry.expires > now and self._current(key, entry):
            with self._lock:
                self._counts["hits_exact"] += 1
            return CacheHit(entry.answer, entry.question, "exact", 1.0)
        with self._lock:
            candidates = [e for (s, _), e in self._entries.items() if s == key[0] and e.expires > now]
        if not candidates:
            return self._miss()
        scores = np.stack([e.vector for e in candidates]) @ np.asarray(embed(question), dtype=np.float32)
        best = int(np.argmax(scores))
        if scores[best] < self.threshold:
            return self._miss()
        if reason := conflicting(question, candidates[best].question):
            with self._lock:
                self._counts[f"guarded_{reason}"] += 1
            return None
        if not self._current((key[0], normalise(candidates[best].question)), candidates[best]):
            return self._miss()
        with self._lock:
            self._counts["hits_semantic"] += 1
        return CacheHit(candidates[best].answer, candidates[best].question, "semantic", float(scores[best]))

    def store(self, question: str, vector: np.ndarray, scope: CacheScope, answer: dict,
              cited: list[tuple[str, str]]) -> bool:
        with self._lock:
            if answer.get("degraded") or answer.get("partial"):
                self._counts["refused_degraded"] += 1
                return False
            if len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]  # dicts keep insertion order: the oldest goes
            self._entries[(scope.key(), normalise(question))] = _Entry(
                question, answer, np.asarray(vector, dtype=np.float32), self.clock() + self.ttl, list(cited),
                self.versions_of(list(cited)))
            self._counts["stores"] += 1
            return True

    def invalidate(self, collection: str, document_id: str) -> int:
        with self._lock:
            doomed = [k for k, e in self._entries.items() if (collection, document_id) in e.cited]
            for key in doomed:
                del self._entries[key]
            self._counts["evicted"] += len(doomed)
            return len(doomed)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _current(self, key: tuple[str, str], entry: _Entry) -> bool:
        """False (and the entry dropped) when a cited document has changed since the answer was cached."""
        if self.versions_of(entry.cited) == entry.versions:
            return True
        with self._lock:
            self._entries.pop(key, None)
            self._counts["evicted"] += 1
        return False

    def _miss(self) -> None:
        with self._lock:
            self._counts["misses"] += 1
        return None
