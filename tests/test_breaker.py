"""The circuit breaker with an injected clock: closed, open, half-open, trial outcomes, stale calls, threads."""

from __future__ import annotations

import threading

import pytest

from ragfn.core.errors import BadEvent, Unavailable
from ragfn.gateway.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpen

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Boom(Exception):
    pass


def fail() -> None:
    raise Boom("dependency down")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker("llm", failure_threshold=3, reset_seconds=10.0, clock=clock)


def trip(breaker: CircuitBreaker, times: int = 3) -> None:
    for _ in range(times):
        with pytest.raises(Boom):
            breaker.call(fail)


def test_closed_passes_calls_and_results_through(breaker: CircuitBreaker) -> None:
    assert breaker.call(lambda a, b=0: a + b, 2, b=3) == 5
    assert breaker.state == CLOSED and breaker.failures == 0


def test_consecutive_failures_open_it_and_it_fails_fast(breaker: CircuitBreaker, clock: Clock) -> None:
    trip(breaker)
    assert breaker.state == OPEN
    called = []
    clock.now += 4
    with pytest.raises(CircuitOpen) as caught:
        breaker.call(called.append, 1)
    assert called == []
    error = caught.value
    assert isinstance(error, Unavailable) and error.status == 503 and error.retryable
    assert "llm circuit is open" in str(error) and error.retry_after == pytest.approx(6.0)


def test_a_success_resets_the_count(breaker: CircuitBreaker) -> None:
    trip(breaker, 2)
    breaker.call(lambda: None)
    trip(breaker, 2)
    assert breaker.state == CLOSED and breaker.failures == 2


def test_caller_errors_do_not_count_but_are_raised(breaker: CircuitBreaker) -> None:
    def bad_request() -> None:
        raise BadEvent("malformed question")

    for _ in range(5):
        with pytest.raises(BadEvent):
            breaker.call(bad_request)
    assert breaker.state == CLOSED and breaker.failures == 0


def test_retryable_ragfn_errors_count(breaker: CircuitBreaker) -> None:
    def down() -> None:
        raise Unavailable("predictor 503")

    for _ in range(3):
        with pytest.raises(Unavailable):
            breaker.call(down)
    assert breaker.state == OPEN


def test_after_the_reset_one_trial_success_closes_it(breaker: CircuitBreaker, clock: Clock) -> None:
    trip(breaker)
    clock.now += 10
    assert breaker.state == HALF_OPEN
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state == CLOSED and breaker.failures == 0
    trip(breaker, 2)
    assert breaker.state == CLOSED  # a fresh count after closing


def test_a_failed_trial_reopens_for_a_full_period(breaker: CircuitBreaker, clock: Clock) -> None:
    trip(breaker)
    clock.now += 10
    trip(breaker, 1)
    assert breaker.state == OPEN
    clock.now += 9.9
    with pytest.raises(CircuitOpen):
        breaker.call(lambda: None)
    clock.now += 0.1
    assert breaker.call(lambda: 1) == 1 and breaker.state == CLOSED


def test_only_one_trial_runs_while_half_open(breaker: CircuitBreaker, clock: Clock) -> None:
    trip(breaker)
    clock.now += 10
    with breaker.guard():  # the trial, still in flight
        assert breaker.state == HALF_OPEN
        with pytest.raises(CircuitOpen, match="half-open"):
            breaker.call(lambda: None)
    assert breaker.state == CLOSED


def test_a_call_from_before_the_circuit_opened_cannot_close_it(breaker: CircuitBreaker, clock: Clock) -> None:
    slow = breaker.guard()
    slow.__enter__()  # admitted while closed, finishes late
    trip(breaker)
    clock.now += 10
    trial = breaker.guard()
    trial.__enter__()
    slow.__exit__(None, None, None)  # succeeds, but it is not the trial
    assert breaker.state == HALF_OPEN
    assert trial.__exit__(Boom, Boom("still down"), None) is False  # the trial fails: re-raised, reopened
    assert breaker.state == OPEN


def test_an_interrupted_trial_lets_the_next_call_try(breaker: CircuitBreaker, clock: Clock) -> None:
    trip(breaker)
    clock.now += 10
    with pytest.raises(KeyboardInterrupt), breaker.guard():
        raise KeyboardInterrupt
    assert breaker.state == HALF_OPEN
    assert breaker.call(lambda: 2) == 2 and breaker.state == CLOSED


def test_the_context_manager_records_outcomes(breaker: CircuitBreaker) -> None:
    for _ in range(3):
        with pytest.raises(Boom), breaker.guard():
            fail()
    with pytest.raises(CircuitOpen), breaker.guard():
        pytest.fail("the block must not run while open")


def test_custom_failure_predicate(clock: Clock) -> None:
    breaker = CircuitBreaker("store", failure_threshold=1, clock=clock, is_failure=lambda e: isinstance(e, Boom))
    with pytest.raises(ValueError):
        breaker.call(int, "x")
    assert breaker.state == CLOSED
    trip(breaker, 1)
    assert breaker.state == OPEN


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker("x", reset_seconds=-1)


def test_threads_share_one_state(clock: Clock) -> None:
    breaker = CircuitBreaker("llm", failure_threshold=50, reset_seconds=10.0, clock=clock)
    barrier = threading.Barrier(20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        for _ in range(10):
            try:
                breaker.call(fail)
            except Boom:
                result = "failed"
            except CircuitOpen:
                result = "rejected"
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The 50th failure opens it: every later call is rejected without running (the clock does not move).
    assert outcomes.count("failed") == 50 and outcomes.count("rejected") == 150
    assert breaker.state == OPEN

    clock.now += 10
    admitted = threading.Event()
    release = threading.Event()
    rejected: list[bool] = []

    def trial() -> None:
        with breaker.guard():
            admitted.set()
            release.wait(5)

    runner = threading.Thread(target=trial)
    runner.start()
    assert admitted.wait(5)
    others = [threading.Thread(target=lambda: rejected.append(_rejected(breaker))) for _ in range(10)]
    for thread in others:
        thread.start()
    for thread in others:
        thread.join()
    release.set()
    runner.join()
    assert rejected == [True] * 10 and breaker.state == CLOSED


def _rejected(breaker: CircuitBreaker) -> bool:
    try:
        breaker.call(lambda: None)
    except CircuitOpen:
        return True
    return False
