"""The predictor's Prometheus metrics, served by KServe's own `/metrics` (the default registry)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# generation latencies span from a few ms (extractive) to minutes (long answers on CPU)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


class PredictorMetrics:
    """One set per process; tests pass their own registry so several predictors can live side by side."""

    def __init__(self, model: str, registry: CollectorRegistry = REGISTRY) -> None:
        labels = ["model"]
        self.time_to_first_token = Histogram(
            "ragfn_predictor_time_to_first_token_seconds", "Request arrival to first generated text, queue included",
            labels, buckets=_LATENCY_BUCKETS, registry=registry).labels(model)
        self.tokens_per_second = Histogram(
            "ragfn_predictor_tokens_per_second", "Completion tokens per second after the first, per request",
            labels, buckets=_RATE_BUCKETS, registry=registry).labels(model)
        self.completion_tokens = Counter(
            "ragfn_predictor_completion_tokens", "Generated tokens", labels, registry=registry).labels(model)
        self.requests = Counter(
            "ragfn_predictor_requests", "Finished generations by outcome", labels + ["outcome"], registry=registry)
        self.in_flight = Gauge(
            "ragfn_predictor_requests_in_flight", "Generations running now", labels, registry=registry).labels(model)
        self.queued = Gauge(
            "ragfn_predictor_requests_queued", "Requests waiting for a generation slot", labels,
            registry=registry).labels(model)
        self.load_seconds = Gauge(
            "ragfn_predictor_engine_load_seconds", "Time the engine took to load", labels,
            registry=registry).labels(model)
        self.ready = Gauge("ragfn_predictor_ready", "1 once the engine is loaded", labels,
                           registry=registry).labels(model)
        self.model = model

    def finished(self, outcome: str) -> None:
        """outcome: stop | length | cancelled | error | overloaded"""
        self.requests.labels(self.model, outcome).inc()
