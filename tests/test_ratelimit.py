"""The sliding-window rate limiter against the real Redis on 127.0.0.1:6379, and with Redis unreachable."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
import uuid

import pytest
import redis
from conftest import free_port
from redis.backoff import NoBackoff
from redis.retry import Retry

from ragfn.core.errors import ConfigError, RateLimited
from ragfn.gateway.ratelimit import Decision, RateLimiter, RateLimitExceeded

pytestmark = pytest.mark.integration


@pytest.fixture
def client():
    client = redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2)
    yield client
    client.close()


@pytest.fixture
def prefix(client):
    prefix = f"test-rl-{uuid.uuid4().hex[:8]}"
    yield prefix
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def test_admits_up_to_the_limit_then_refuses(client, prefix: str) -> None:
    limiter = RateLimiter(client, limit=3, window_seconds=60, prefix=prefix)
    assert [limiter.check("acme").remaining for _ in range(3)] == [2, 1, 0]
    refused = limiter.check("acme")
    assert refused.allowed is False and refused.remaining == 0
    assert 59 < refused.retry_after <= 60


def test_tenants_have_separate_windows(client, prefix: str) -> None:
    limiter = RateLimiter(client, limit=1, window_seconds=60, prefix=prefix)
    assert limiter.check("acme").allowed and limiter.check("globex").allowed
    assert not limiter.check("acme").allowed and not limiter.check("globex").allowed


def test_enforce_raises_429_with_the_wait(client, prefix: str) -> None:
    limiter = RateLimiter(client, limit=1, window_seconds=30, prefix=prefix)
    assert limiter.enforce("acme").allowed
    with pytest.raises(RateLimited) as caught:
        limiter.enforce("acme")
    error = caught.value
    assert isinstance(error, RateLimitExceeded) and error.status == 429 and error.retryable
    assert 29 < error.retry_after <= 30 and f"retry after {error.retry_after:.1f}s" in str(error)
    assert "'acme'" in str(error)


def test_the_window_slides(client, prefix: str) -> None:
    limiter = RateLimiter(client, limit=2, window_seconds=1.0, prefix=prefix)
    assert limiter.check("acme").allowed
    time.sleep(0.5)
    assert limiter.check("acme").allowed
    refused = limiter.check("acme")
    assert not refused.allowed and 0 < refused.retry_after <= 0.5  # the first request leaves the window first
    time.sleep(refused.retry_after + 0.05)
    assert limiter.check("acme") == Decision(True, 0, 0.0)  # one slot back, the second request still counts
    assert not limiter.check("acme").allowed
    time.sleep(1.05)
    assert limiter.check("acme").remaining == 1  # a whole window later: all slots back


def test_refused_requests_do_not_extend_the_wait(client, prefix: str) -> None:
    limiter = RateLimiter(client, limit=1, window_seconds=0.3, prefix=prefix)
    limiter.check("acme")
    for _ in range(20):
        assert not limiter.check("acme").allowed
    time.sleep(0.32)
    assert limiter.check("acme").allowed


def test_keys_expire_with_the_window(client, prefix: str) -> None:
    limiter = RateLimiter(client, limit=5, window_seconds=2, prefix=prefix)
    limiter.check("acme")
    assert 0 < client.pttl(f"{prefix}:acme") <= 2000


def test_exactly_the_limit_is_admitted_across_threads(client, prefix: str) -> None:
    # One limiter per thread, each with its own connection: like separate gateway replicas.
    limiters = [RateLimiter(redis.Redis(host="127.0.0.1", port=6379), limit=50, window_seconds=60, prefix=prefix)
                for _ in range(20)]
    barrier = threading.Barrier(len(limiters))
    decisions: list[Decision] = []
    lock = threading.Lock()

    def worker(limiter: RateLimiter) -> None:
        barrier.wait()
        mine = [limiter.check("acme") for _ in range(10)]
        with lock:
            decisions.extend(mine)

    threads = [threading.Thread(target=worker, args=(limiter,)) for limiter in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    admitted = [d for d in decisions if d.allowed]
    assert len(decisions) == 200 and len(admitted) == 50
    assert sorted(d.remaining for d in admitted) == list(range(50))  # each slot handed out once
    assert client.zcard(f"{prefix}:acme") == 50
    for limiter in limiters:
        limiter.redis.close()


def test_the_script_is_reloaded_if_redis_forgets_it(client, prefix: str) -> None:
    limiter = RateLimiter(client, limit=2, window_seconds=60, prefix=prefix)
    assert limiter.check("acme").allowed
    client.script_flush()
    assert limiter.check("acme").allowed and not limiter.check("acme").allowed


def test_reset_forgets_a_tenant(client, prefix: str) -> None:
    limiter = RateLimiter(client, limit=1, window_seconds=60, prefix=prefix)
    limiter.check("acme")
    limiter.reset("acme")
    assert limiter.check("acme").allowed


def test_headers(client, prefix: str) -> None:
    limiter = RateLimiter(client, limit=1, window_seconds=60, prefix=prefix)
    assert limiter.headers(limiter.check("acme")) == {"X-RateLimit-Limit": "1", "X-RateLimit-Remaining": "0"}
    refused = limiter.headers(limiter.check("acme"))
    assert refused["X-RateLimit-Remaining"] == "0" and 59 <= int(refused["Retry-After"]) <= 60
    assert limiter.headers(Decision(True, -1, 0.0)) == {"X-RateLimit-Limit": "1"}


@pytest.mark.parametrize(("limit", "window"), [(0, 60), (10, 0), (10, -1)])
def test_invalid_limits_are_config_errors(client, limit: int, window: float) -> None:
    with pytest.raises(ConfigError):
        RateLimiter(client, limit=limit, window_seconds=window)


def fast_failing(port: int) -> redis.Redis:
    """The client the gateway should build: no retry storm, short timeouts."""
    return redis.Redis(host="127.0.0.1", port=port, retry=Retry(NoBackoff(), 1), socket_connect_timeout=0.25,
                       socket_timeout=0.25)


def test_redis_down_admits_and_warns_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RateLimiter(fast_failing(1), limit=1, window_seconds=60, down_seconds=60)
    with caplog.at_level(logging.WARNING, logger="ragfn.ratelimit"):
        decisions = [limiter.check("acme") for _ in range(3)]
        started = time.monotonic()
        decisions += [limiter.check("acme") for _ in range(1000)]
        assert time.monotonic() - started < 0.5  # Redis is not asked again within down_seconds
        assert limiter.enforce("acme").allowed
    assert set(decisions) == {Decision(True, -1, 0.0)}
    warnings = [r for r in caplog.records if r.name == "ragfn.ratelimit"]
    assert len(warnings) == 1 and "without a limit" in warnings[0].getMessage()


def test_failing_closed_refuses_what_it_cannot_count() -> None:
    from ragfn.core.errors import Unavailable

    limiter = RateLimiter(fast_failing(1), limit=1, window_seconds=60, down_seconds=60, fail_open=False)
    for _ in range(2):  # Redis refused, then the remembered outage: both refuse
        with pytest.raises(Unavailable, match="RAGFN_RATE_LIMIT_FAIL=closed") as refused:
            limiter.check("acme")
        assert refused.value.status == 503 and refused.value.retryable


def test_redis_down_with_the_default_client_still_answers() -> None:
    # redis-py 8's default client retries a refused connection with backoff (~3 s here): slow, but never an error.
    limiter = RateLimiter(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2), limit=1,
                          window_seconds=60)
    assert limiter.check("acme") == Decision(True, -1, 0.0)


@pytest.fixture
def own_redis(tmp_path):
    """A private redis-server that the test can stop and start again on the same port."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(tmp_path)]
    processes: list[subprocess.Popen] = []

    def start() -> None:
        processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
        probe = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                probe.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop() -> None:
        processes[-1].terminate()
        processes[-1].wait(10)

    start()
    yield port, start, stop
    for process in processes:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


def test_redis_going_down_and_coming_back(own_redis) -> None:
    port, start, stop = own_redis
    limiter = RateLimiter(fast_failing(port), limit=2, window_seconds=60, down_seconds=1.5)
    assert limiter.check("acme").remaining == 1
    stop()
    assert limiter.check("acme") == Decision(True, -1, 0.0)
    start()  # an empty Redis: the window starts again, and the script must be loaded again
    assert limiter.check("acme").remaining == -1  # still inside down_seconds: Redis is left alone
    time.sleep(1.55)
    assert limiter.check("acme") == Decision(True, 1, 0.0)
    assert limiter.check("acme").remaining == 0 and not limiter.check("acme").allowed
