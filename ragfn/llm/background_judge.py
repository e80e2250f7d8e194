"""The background judge: a sampled live answer (answer.sampled) scored by the judge model, kept as Prometheus metrics.

    ragfn_answer_relevance{model,provider}      histogram of the judge's relevance, 0 (score 1) to 1 (score 5)
    ragfn_answer_groundedness{model,provider}   histogram of its groundedness, likewise
    ragfn_judge_samples_total{outcome}          scored | unparsed | judge-unavailable | judge-rejected |
                                                judge-unconfigured (no RAGFN_JUDGE_URL on the function)
    ragfn_judge_seconds                         time the judge took per sample

A judge that is down or refuses costs the sample, not a retry: the outcome is counted and the event acknowledged.
Samples are measurements; retrying them against a struggling judge model would add load where it hurts and fill the
dead-letter store with events nobody replays.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from ragfn.core.errors import ConfigError, RagfnError
from ragfn.eventing.events import AnswerSampled
from ragfn.llm.client import LLMRejected
from ragfn.llm.judge import RUBRIC_VERSION, Judge
from ragfn.retrieval.context import Passage

log = logging.getLogger("ragfn.judge")
SCORE_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the rubric's five scores, 1 to 5
OUTCOMES = ("scored", "unparsed", "judge-unavailable", "judge-rejected", "judge-unconfigured")
MAX_MODELS = 16  # distinct model labels kept; more are counted as "other", so no sender can grow the series unbounded


class JudgeMetrics:
    """The judge function's metrics, in a registry of their own (served at its /metrics)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ["model", "provider"]
        self.relevance = Histogram("ragfn_answer_relevance", "The background judge's relevance of sampled answers "
                                   f"(rubric {RUBRIC_VERSION}; 0 is score 1, 1 is score 5)", labels,
                                   buckets=SCORE_BUCKETS, registry=self.registry)
        self.groundedness = Histogram("ragfn_answer_groundedness", "The background judge's groundedness of sampled "
                                      f"answers (rubric {RUBRIC_VERSION}; 0 is score 1, 1 is score 5)", labels,
                                      buckets=SCORE_BUCKETS, registry=self.registry)
        self.samples = Counter("ragfn_judge_samples", "Sampled answers the judge function received, by outcome",
                               ["outcome"], registry=self.registry)
        self.seconds = Histogram("ragfn_judge_seconds", "Time the judge model took per sample",
                                 buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120), registry=self.registry)
        for outcome in OUTCOMES:  # every outcome's series exists from the start, so rate() sees the first one
            self.samples.labels(outcome)
        self._models: set[str] = set()
        self._lock = threading.Lock()

    def model_label(self, model: str) -> str:
        with self._lock:
            if model not in self._models and len(self._models) < MAX_MODELS:
                self._models.add(model)
            return model if model in self._models else "other"


def judge_sample(sample: AnswerSampled, judge: Callable[[], Judge], metrics: JudgeMetrics) -> dict:
    """Scores one sampled answer and records it; returns the outcome for the function's reply and logs. `judge`
    builds the judge (a ConfigError without a judge URL: counted as judge-unconfigured, like a judge that is down)."""
    try:
        model_judge = judge()
    except ConfigError as exc:
        metrics.samples.labels("judge-unconfigured").inc()
        log.error("answer %s not judged: %s", sample.answer_id, exc)
        return {"answer_id": sample.answer_id, "outcome": "judge-unconfigured", "error": str(exc)}
    passages = [Passage(p.n, "", "", "", 0, 0, p.text, 0.0) for p in sample.passages]
    started = time.perf_counter()
    try:
        verdict = model_judge.verdict(sample.question, sample.answer, passages)
    except RagfnError as exc:
        outcome = "judge-rejected" if isinstance(exc, LLMRejected) else "judge-unavailable"  # down, 429, 5xx
        metrics.samples.labels(outcome).inc()
        log.warning("answer %s not judged (%s): %s", sample.answer_id, outcome, exc)
        return {"answer_id": sample.answer_id, "outcome": outcome, "error": str(exc)[:300]}
    finally:
        metrics.seconds.observe(time.perf_counter() - started)
    if not verdict.parsed:
        metrics.samples.labels("unparsed").inc()
        log.info("answer %s: the judge's reply held no verdict", sample.answer_id)
        log.debug("the judge's reply to %s: %r", sample.answer_id, verdict.raw[:200])  # may quote the passages
        return {"answer_id": sample.answer_id, "outcome": "unparsed", "rubric": RUBRIC_VERSION}
    metrics.samples.labels("scored").inc()
    model = metrics.model_label(sample.model)
    metrics.relevance.labels(model, sample.provider).observe(verdict.relevance)
    metrics.groundedness.labels(model, sample.provider).observe(verdict.groundedness)
    return {"answer_id": sample.answer_id, "outcome": "scored", "rubric": RUBRIC_VERSION,
            "relevance": verdict.relevance, "groundedness": verdict.groundedness, "reason": verdict.reason}
