"""Who writes an answer: the primary model, a second provider when the primary cannot, else the extractive engine.

    primary cold beyond its wait, down, rate-limited (429) or refusing
        -> the second provider (RAGFN_LLM_FALLBACK_URL), behind its own circuit breaker, not degraded: its answer is
           marked with its model and cached under it
        -> when there is none, or it fails too: the extractive engine, degraded with the primary's reason
Each model sits behind its own breaker, so a dead one costs one fast failure per request, not a timeout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from opentelemetry import trace

from ragfn.core.errors import Unavailable
from ragfn.gateway.backends import gateway_breaker
from ragfn.llm.client import LLM, ExtractiveLLM, LLMRejected
from ragfn.llm.warmup import PredictorWarmth

log = logging.getLogger("ragfn.gateway")
COLD_START = {"degraded": "cold-start", "message": "the model is warming up; answering from the passages meanwhile"}
LLM_DOWN = {"degraded": "llm-unavailable", "message": "the model is unavailable; answering from the passages"}
Provider = Literal["primary", "fallback", "extractive"]


@dataclass
class Generation:
    """What a model call gave: its result (a Completion or a stream of deltas), who wrote it, and the status to show
    when the answer is degraded (None when a model wrote it)."""

    result: object
    provider: Provider
    model: str
    status: dict | None = None


def failed(span: trace.Span, exc: BaseException, reason: str) -> None:
    span.record_exception(exc)
    span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
    span.set_attribute("rag.fallback.reason", reason)


class Providers:
    def __init__(self, primary: LLM, *, second: LLM | None = None, extractive: LLM | None = None,
                 warmth: PredictorWarmth | None = None, cold_wait_seconds: float = 1.0) -> None:
        self.primary, self.second = primary, second
        self.extractive = extractive or ExtractiveLLM()
        self.warmth, self.cold_wait_seconds = warmth, cold_wait_seconds
        self.breakers = {"llm": gateway_breaker("llm")}
        # The name a model's answers are cached under: two servers may well serve the same name ("ragfn", KServe's
        # default), and the fallback's answers must never be served as the primary's.
        self.cache_names = {"primary": primary.name}
        if second is not None:
            self.breakers["llm-fallback"] = gateway_breaker("llm-fallback")
            self.cache_names["fallback"] = second.name if second.name != primary.name else f"{second.name}+fallback"

    def call(self, span: trace.Span, messages: list[dict], method: str, max_tokens: int) -> Generation:
        """The primary's `complete` or `stream`; else the second provider's; else the extractive engine's, with the
        primary's status: cold-start while it warms up (nobody waits for a model to load), llm-unavailable when a
        call failed (429 included) or warm-ups gave up, llm-rejected when it refused the request."""
        if isinstance(self.primary, ExtractiveLLM):  # no model deployed: the engine is the answer, not a fallback
            return Generation(getattr(self.primary, method)(messages, max_tokens=max_tokens), "extractive",
                              self.primary.name)
        if self.warmth is not None and not self.warmth.ready(self.cold_wait_seconds):
            status = LLM_DOWN if self.warmth.gave_up else COLD_START
            span.set_attribute("rag.fallback.reason", status["degraded"])
        else:
            try:
                result = self.breakers["llm"].call(getattr(self.primary, method), messages, max_tokens=max_tokens)
            except Unavailable as exc:
                if self.warmth is not None:
                    self.warmth.failed()
                failed(span, exc, "llm-unavailable")
                status = LLM_DOWN
            except LLMRejected as exc:  # e.g. a prompt over the model's context: the question still gets an answer
                failed(span, exc, "llm-rejected")
                log.warning("%s", exc)
                status = {"degraded": "llm-rejected", "message": f"the model refused the request ({exc.message}); "
                          "answering from the passages"}
            else:
                if self.warmth is not None:
                    self.warmth.seen_ready()
                return Generation(result, "primary", self.primary.name)
        if self.second is not None:
            try:
                result = self.breakers["llm-fallback"].call(getattr(self.second, method), messages,
                                                            max_tokens=max_tokens)
            except (Unavailable, LLMRejected) as exc:
                log.warning("the fallback model failed too: %s", exc)
                span.add_event("fallback model failed", {"exception.message": str(exc)})
            else:
                span.set_attributes({"rag.llm.engine": self.second.name, "rag.llm.provider": "fallback"})
                return Generation(result, "fallback", self.second.name)
        span.set_attributes({"rag.llm.engine": self.extractive.name, "rag.llm.provider": "extractive"})
        result = getattr(self.extractive, method)(messages, max_tokens=max_tokens)
        return Generation(result, "extractive", self.extractive.name, status)

    def expected_model(self) -> str:
        """The model a question will most likely be answered by, whose cached answers a lookup should see: the
        second provider's while the primary's circuit is open, else the primary's."""
        if self.second is not None and self.breakers["llm"].state == "open":
            return self.cache_names["fallback"]
        return self.cache_names["primary"]

    def stream_failed(self, provider: Provider) -> None:
        """A stream that broke after it started: a primary's warm-up state learns it is down."""
        if provider == "primary" and self.warmth is not None:
            self.warmth.failed()
