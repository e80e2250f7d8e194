"""A thread-safe circuit breaker: stop calling a dependency that keeps failing, and probe it with one trial call.

    closed ──(failure_threshold consecutive failures)──▶ open ──(reset_seconds)──▶ half-open
      ▲                                                   ▲                            │
      └───────────────(trial succeeds)────────────────────┼────────(trial fails)───────┘
While open, and while the half-open trial is in flight, calls fail at once with CircuitOpen (an Unavailable, 503).
Timeouts are the HTTP client's job: a hung call is bounded there, and reaches the breaker as a failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from ragfn.core.errors import RagfnError, Unavailable

P = ParamSpec("P")
T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitOpen(Unavailable):
    """Unavailable (503) raised without calling the dependency; `retry_after` is when the next trial may run."""

    def __init__(self, message: str, *, retry_after: float, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = retry_after


def counts_as_failure(exc: BaseException) -> bool:
    """A dependency fault: anything but a RagfnError the caller caused (400s); those prove the dependency answered."""
    return not isinstance(exc, RagfnError) or exc.retryable


class CircuitBreaker:
    def __init__(self, name: str, *, failure_threshold: int = 5, reset_seconds: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 is_failure: Callable[[BaseException], bool] = counts_as_failure) -> None:
        if failure_threshold < 1 or reset_seconds < 0:
            raise ValueError("failure_threshold must be >= 1 and reset_seconds >= 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._is_failure = is_failure
        self._lock = threading.Lock()
        self._state = CLOSED
        self._failures = 0
        self._opened_at = 0.0
        # Bumped on every transition: a call admitted under an older state reports nothing, so a slow call that
        # started before the circuit opened cannot close it, or be mistaken for the half-open trial.
        self._generation = 0

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.reset_seconds:
                return HALF_OPEN  # the next call will be the trial
            return self._state

    @property
    def failures(self) -> int:
        with self._lock:
            return self._failures

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        with self.guard():
            return fn(*args, **kwargs)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """`with breaker.guard(): ...` runs the block as one call through the breaker."""
        generation = self._admit()
        try:
            yield
        except BaseException as exc:
            if isinstance(exc, Exception):
                self._record(generation, failed=self._is_failure(exc))
            else:
                self._abandon(generation)  # KeyboardInterrupt, cancellation: says nothing about the dependency
            raise
        self._record(generation, failed=False)

    def _admit(self) -> int:
        with self._lock:
            now = self._clock()
            if self._state == CLOSED:
                return self._generation
            if self._state == OPEN:
                wait = self._opened_at + self.reset_seconds - now
                if wait > 0:
                    raise CircuitOpen(f"{self.name} circuit is open after {self._failures} consecutive failures; "
                                      f"next trial in {wait:.1f}s", retry_after=wait,
                                      hint=f"{self.name} is failing; calls resume when a trial call succeeds")
                self._move(HALF_OPEN)
                return self._generation  # this caller is the one trial
            raise CircuitOpen(f"{self.name} circuit is half-open and a trial call is in flight",
                              retry_after=min(1.0, self.reset_seconds), hint=f"{self.name} is being probed")

    def _record(self, generation: int, *, failed: bool) -> None:
        with self._lock:
            if generation != self._generation:
                return
            if not failed:
                self._failures = 0
                if self._state == HALF_OPEN:
                    self._move(CLOSED)
                return
            self._failures += 1
            if self._state == HALF_OPEN or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
                self._move(OPEN)

    def _abandon(self, generation: int) -> None:
        with self._lock:
            # An abandoned trial must not leave the circuit half-open forever: reopen, so another trial follows.
            if generation == self._generation and self._state == HALF_OPEN:
                self._opened_at = self._clock() - self.reset_seconds
                self._move(OPEN)

    def _move(self, state: str) -> None:
        self._state = state
        self._generation += 1

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self.state!r}, failures={self.failures})"
