"""The background judge's sampler: a share of live answers goes, as answer.sampled CloudEvents, to functions/judge.

Sampling is off the request path: the gateway offers each answer (`offer`), and one worker thread publishes
those drawn. The queue is bounded, so a slow or absent broker drops samples (counted) instead of holding answers
or memory: a sample is a measurement, and losing one loses nothing a user sees. Publishing failures are logged (and
counted in `sent`, `dropped`, `failed`), never raised into an answer.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from collections.abc import Callable

from pydantic import ValidationError

from ragfn.core.errors import RagfnError, problems
from ragfn.eventing import events
from ragfn.eventing.events import AnswerSampled, SampledPassage
from ragfn.eventing.publish import OutboundEvent, Publisher
from ragfn.retrieval.context import Passage

log = logging.getLogger("ragfn.gateway.sampling")
MAX_PASSAGES = 12  # bounds the event (AnswerSampled's limits): the judge reads the passages the model read first
MAX_PASSAGE_CHARS = 2000
MAX_ANSWER_CHARS = 8000


def answer_sample(answer_id: str, question: str, answer: str, passages: list[Passage], *, model: str,
                  provider: str, collection: str, prompt_version: str, degraded: str | None) -> AnswerSampled:
    """The event's data, cut to its bounds."""
    return AnswerSampled(
        answer_id=answer_id, question=question, answer=answer[:MAX_ANSWER_CHARS],
        passages=[SampledPassage(n=p.number, text=p.text[:MAX_PASSAGE_CHARS]) for p in passages[:MAX_PASSAGES]],
        model=model, provider=provider, collection=collection, prompt_version=prompt_version, degraded=degraded)


class AnswerSampler:
    """Publishes a `rate` share of the answers offered to it, from one worker thread, at most `backlog` waiting."""

    def __init__(self, publisher: Publisher, rate: float, *, backlog: int = 64,
                 draw: Callable[[], float] = random.random) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"sample rate must be between 0 and 1, got {rate}")
        self.publisher, self.rate, self._draw = publisher, rate, draw
        self._queue: queue.Queue[AnswerSampled] = queue.Queue(maxsize=backlog)
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self.sent = self.dropped = self.failed = 0

    def offer(self, build: Callable[[], AnswerSampled]) -> bool:
        """Draws; when this answer is in the sample, builds it (only then: most answers are not) and queues it.
        Never raises: whatever goes wrong with a sample, the answer it samples stands."""
        if self.rate <= 0 or self._draw() >= self.rate:
            return False
        try:
            sample = build()
        except Exception as exc:  # e.g. a served name that is no metric label: the answer goes on unsampled
            self._count("failed")
            # the problems only: a validation error's text would carry pieces of the question and passages
            log.warning("answer not sampled: %s", problems(exc) if isinstance(exc, ValidationError) else repr(exc))
            return False
        with self._lock:  # a worker that died (it should not) is replaced before anything waits for it
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._publish_forever, name="ragfn-answer-sampler",
                                                daemon=True)
                self._worker.start()
        try:
            self._queue.put_nowait(sample)
        except queue.Full:
            self._count("dropped")
            log.warning("answer %s not sampled: %d samples already wait for the broker", sample.answer_id,
                        self._queue.maxsize)
            return False
        return True

    def _count(self, outcome: str) -> None:
        with self._lock:
            setattr(self, outcome, getattr(self, outcome) + 1)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queued sample was published or failed (shutdown, tests); False on timeout."""
        done = threading.Event()
        threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True).start()
        return done.wait(timeout)

    def _publish_forever(self) -> None:
        while True:
            sample = self._queue.get()
            try:
                self.publisher.publish([OutboundEvent(events.ANSWER_SAMPLED, sample, key=sample.answer_id)])
                self._count("sent")
            except RagfnError as exc:
                self._count("failed")
                log.warning("answer %s not sent to the judge: %s", sample.answer_id, exc)
            except Exception:  # the worker must outlive any one sample
                self._count("failed")
                log.exception("answer %s not sent to the judge", sample.answer_id)
            finally:
                self._queue.task_done()
