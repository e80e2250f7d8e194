"""Answer feedback: a thumbs up or down, with an optional comment, tied to the answer it judges, kept in Redis.

The gateway remembers each answer it gives (question, collection, cache and degraded flags, the text) for
`ttl_seconds` under its `answer_id`, and at most `max_answers` per tenant (a sorted index by time, trimmed on
each write: bench/soak.py found one key per answer, 7 days long, growing Redis by tens of GB at steady load);
feedback names that id, so a rating always says what it is about and a tenant can only rate its own answers.
Ratings go to a capped Redis stream (for notebooks) and per-tenant counters (for `ragfn stats`); rating an answer
again replaces the earlier rating.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Literal

from ragfn.core.errors import ObjectNotFound, Unavailable

Rating = Literal["up", "down"]
STREAM_LENGTH = 100_000  # about the last 100k ratings; older ones are trimmed, the counters keep the totals

# Pops a tenant's oldest remembered answers past the cap and deletes them, in one step: writers that each counted
# the excess themselves and popped it evicted too many when they raced. KEYS: the index. ARGV: cap, answer key prefix.
_TRIM = """
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if excess <= 0 then return 0 end
local oldest = redis.call('ZPOPMIN', KEYS[1], excess)
for i = 1, #oldest, 2 do redis.call('DEL', ARGV[2] .. oldest[i]) end
return excess
"""


@dataclass(frozen=True)
class AnsweredQuestion:
    answer_id: str
    tenant: str
    collection: str
    question: str
    answer: str
    cache: str
    degraded: str | None
    model: str = ""  # the LLM the gateway asks (a degraded answer may come from its fallback instead)
    prompt_version: str = ""
    # On a cache hit, the cached question whose answer was served: a down-rated hit is a candidate labelled pair
    # (asked, cached, should not match) for notebooks/03-cache-threshold.
    cached_question: str | None = None
    cache_similarity: float | None = None


class FeedbackStore:
    def __init__(self, redis, *, prefix: str = "rc", ttl_seconds: int = 7 * 86400,
                 max_answers: int = 20_000) -> None:
        self.redis, self.prefix, self.ttl_seconds, self.max_answers = redis, prefix, ttl_seconds, max_answers
        self._trim = redis.register_script(_TRIM)

    def remember(self, answered: AnsweredQuestion) -> None:
        index, now = f"{self.prefix}:fb:answers:{answered.tenant}", time.time()
        pipe = self.redis.pipeline()
        record = json.dumps(asdict(answered) | {"answer": answered.answer[:4000]})
        pipe.set(self._answer_key(answered.answer_id), record, ex=self.ttl_seconds)
        pipe.zadd(index, {answered.answer_id: now})
        pipe.zremrangebyscore(index, "-inf", now - self.ttl_seconds)  # ids whose answers expired by themselves
        pipe.expire(index, self.ttl_seconds)
        self._trim(keys=[index], args=[self.max_answers, self._answer_key("")], client=pipe)  # the oldest go first
        self._call(pipe.execute)

    def rate(self, answer_id: str, tenant: str, rating: Rating, comment: str = "") -> dict:
        raw = self._call(self.redis.get, self._answer_key(answer_id))
        answered = json.loads(raw) if raw else None
        if answered is None or answered["tenant"] != tenant:  # another tenant's answer is as good as unknown
            raise ObjectNotFound(f"no answer {answer_id} to rate",
                                 hint=f"an answer can be rated for {self.ttl_seconds // 86400} days, while it is "
                                      f"among its tenant's last {self.max_answers}")
        entry = answered | {"rating": rating, "comment": comment, "at": time.time()}
        previous = self._call(self.redis.getset, f"{self.prefix}:fb:given:{answer_id}", rating)
        pipe = self.redis.pipeline()
        pipe.expire(f"{self.prefix}:fb:given:{answer_id}", self.ttl_seconds)
        if previous is not None:
            pipe.hincrby(self._counts_key, f"{tenant}:{previous.decode()}", -1)
        pipe.hincrby(self._counts_key, f"{tenant}:{rating}", 1)
        pipe.xadd(f"{self.prefix}:fb:stream", {"entry": json.dumps(entry)}, maxlen=STREAM_LENGTH, approximate=True)
        self._call(pipe.execute)
        return {"answer_id": answer_id, "rating": rating, "replaced": previous.decode() if previous else None}

    def counts(self, tenant: str | None = None) -> dict[str, int]:
        """{"up": n, "down": n} for one tenant, or for all."""
        totals = {"up": 0, "down": 0}
        for field, value in self._call(self.redis.hgetall, self._counts_key).items():
            owner, _, rating = field.decode().rpartition(":")
            if tenant is None or owner == tenant:
                totals[rating] = totals.get(rating, 0) + int(value)
        return totals

    def recent(self, count: int = 100, tenant: str | None = None) -> list[dict]:
        """The newest ratings first, each with its question, answer, flags, rating and comment."""
        rows = self._call(self.redis.xrevrange, f"{self.prefix}:fb:stream", count=count)
        entries = [json.loads(fields[b"entry"]) for _, fields in rows]
        return [e for e in entries if tenant is None or e["tenant"] == tenant]

    @property
    def _counts_key(self) -> str:
        return f"{self.prefix}:fb:counts"

    def _answer_key(self, answer_id: str) -> str:
        return f"{self.prefix}:fb:answer:{answer_id}"

    @staticmethod
    def _call(function, *args, **kwargs):
        import redis

        try:
            return function(*args, **kwargs)
        except redis.RedisError as exc:
            raise Unavailable(f"feedback store (Redis) failed: {exc}") from exc
