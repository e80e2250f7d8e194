"""A concurrency limit with a bounded, timed queue in front of the engine; its depth is what autoscalers read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from inference.metrics import PredictorMetrics
from ragfn.core.errors import Unavailable


class Overloaded(Unavailable):
    """The queue is full or a request waited too long: 503 with Retry-After, so callers back off or fall back."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message, hint=f"retry after {retry_after}s, or raise RAGFN_LLM_MAX_QUEUE")
        self.retry_after = retry_after


class Admission:
    def __init__(self, limit: int, max_queue: int, queue_timeout: float, metrics: PredictorMetrics) -> None:
        self.limit, self.max_queue, self.queue_timeout, self.metrics = limit, max_queue, queue_timeout, metrics
        self._slots = asyncio.Semaphore(limit)
        self.running = 0
        self.waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.running + self.waiting >= self.limit + self.max_queue:
            raise Overloaded(f"{self.running} generations running and {self.waiting} queued (limit {self.limit}, "
                             f"queue {self.max_queue})")
        self.waiting += 1
        self.metrics.queued.inc()
        try:
            await asyncio.wait_for(self._slots.acquire(), self.queue_timeout)
        except TimeoutError:
            raise Overloaded(f"waited {self.queue_timeout:g}s for a generation slot", retry_after=5) from None
        finally:
            self.waiting -= 1
            self.metrics.queued.dec()
        self.running += 1
        self.metrics.in_flight.inc()
        try:
            yield
        finally:
            self.running -= 1
            self.metrics.in_flight.dec()
            self._slots.release()
