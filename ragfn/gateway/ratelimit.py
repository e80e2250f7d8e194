"""Per-tenant sliding-window rate limits in Redis, one atomic Lua script shared by every gateway replica.

Key: {prefix}:{tenant}  zset  one member per admitted request, scored by Redis server time in microseconds.
A request is admitted while fewer than `limit` were admitted in the last `window_seconds` (exact, not an
estimate); refused requests are not recorded, so a client that keeps retrying is not locked out for longer.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass

from ragfn.core.errors import ConfigError, RateLimited, Unavailable
from ragfn.gateway.breaker import CircuitBreaker, CircuitOpen

log = logging.getLogger("ragfn.ratelimit")

# Redis's own clock, not the callers': replicas with skewed clocks still share one window.
# Lua numbers are doubles; microseconds since the epoch (~1.7e15) stay exact below 2^53.
_SCRIPT = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
  return {1, limit - count - 1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, 0, tonumber(oldest[2]) + window - now}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int  # requests left in the current window; -1 when unknown (Redis down, not limited)
    retry_after: float  # seconds until the next request would be admitted; 0 when allowed


class RateLimitExceeded(RateLimited):
    """RateLimited (429) with the wait in seconds, for the gateway's Retry-After header."""

    def __init__(self, message: str, *, retry_after: float, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


class RateLimiter:
    """At most `limit` requests per tenant in any `window_seconds`, counted in Redis across replicas.

    Fails open by default: when Redis is unreachable or errors (a full or read-only Redis too), `check` admits the
    request (remaining=-1) and logs a warning, as the gateway degrades without Redis to "no cache, no rate limit"
    rather than refusing to answer: availability over cost. `fail_open=False` (RAGFN_RATE_LIMIT_FAIL=closed) refuses
    instead, with a retryable 503, for installs where an unmetered GPU costs more than an outage. After a failure it
    leaves Redis alone for `down_seconds`, so only one request per period pays for finding Redis down.
    That request still waits for the client: give it short timeouts and few retries (redis-py 8 retries a refused
    connection 10 times with backoff, about 3 s), e.g. `retry=Retry(NoBackoff(), 1), socket_timeout=0.25`.
    """

    def __init__(self, client, *, limit: int, window_seconds: float, prefix: str = "rl",
                 down_seconds: float = 5.0, fail_open: bool = True) -> None:
        if limit < 1 or not window_seconds > 0 or down_seconds < 0:
            raise ConfigError(f"rate limit must be at least 1 per positive window, got {limit} per {window_seconds}s"
                              f" (down_seconds={down_seconds})")
        self.redis = client
        self.limit = limit
        self.window_seconds = window_seconds
        self.prefix = prefix
        self.fail_open = fail_open
        self._script = client.register_script(_SCRIPT)  # EVALSHA, reloading the script if Redis lost it
        self._window_us = max(1, round(window_seconds * 1_000_000))
        self._redis_down = CircuitBreaker(f"{prefix} rate limiter redis", failure_threshold=1,
                                          reset_seconds=down_seconds)

    def check(self, tenant: str) -> Decision:
        """Record one request for `tenant` if it fits the window; never raises for Redis failures."""
        import redis

        try:
            allowed, remaining, wait_us = self._redis_down.call(
                self._script, keys=[f"{self.prefix}:{tenant}"], args=[self.limit, self._window_us, uuid.uuid4().hex])
        except CircuitOpen as exc:
            return self._without_redis(exc)  # Redis failed moments ago: do not wait on it again
        except redis.RedisError as exc:
            # Any Redis failure, not only connection errors: a read-only replica after failover or an OOM refusal.
            log.warning("rate limiter cannot reach Redis (%s): %s", "admitting requests without a limit"
                        if self.fail_open else "refusing requests", exc)
            return self._without_redis(exc)
        return Decision(bool(allowed), int(remaining), int(wait_us) / 1_000_000)

    def _without_redis(self, exc: Exception) -> Decision:
        if self.fail_open:
            return Decision(True, -1, 0.0)
        raise Unavailable("the rate limiter cannot reach Redis, and RAGFN_RATE_LIMIT_FAIL=closed refuses requests "
                          "it cannot count", hint="retry shortly; check Redis") from exc

    def enforce(self, tenant: str, *, what: str = "tenant") -> Decision:
        """`check`, raising RateLimitExceeded (a RateLimited, 429) when the tenant (or other key) is over its limit."""
        decision = self.check(tenant)
        if not decision.allowed:
            raise RateLimitExceeded(
                f"{what} {tenant!r} is over its rate limit of {self.limit} requests per {self.window_seconds:g}s; "
                f"retry after {decision.retry_after:.1f}s", retry_after=decision.retry_after,
                hint="slow down or ask for a higher limit")
        return decision

    def headers(self, decision: Decision) -> dict[str, str]:
        """Response headers for a decision: the limit, what is left, and Retry-After (whole seconds) when refused."""
        out = {"X-RateLimit-Limit": str(self.limit)}
        if decision.remaining >= 0:
            out["X-RateLimit-Remaining"] = str(decision.remaining)
        if not decision.allowed:
            out["Retry-After"] = str(max(1, math.ceil(decision.retry_after)))
        return out

    def reset(self, tenant: str) -> None:
        """Forget a tenant's window (an operator lifting a block, tests)."""
        self.redis.delete(f"{self.prefix}:{tenant}")
