"""The ask gateway's logic: cache, then retrieve, then generate; it degrades instead of failing.

    vector store down -> lexical results only          degraded: "vector-store-unavailable"
    LLM down or cold  -> the extractive engine         degraded: "llm-unavailable"
    Redis down        -> no cache                      degraded: "cache-unavailable"
Every dependency sits behind a circuit breaker, so a dead one costs one fast failure, not a timeout per request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

from ragfn.breaker import CircuitBreaker
from ragfn.cache import CacheHit, CacheScope
from ragfn.context import Passage, assemble_context
from ragfn.errors import Unavailable
from ragfn.llm import LLM, PROMPT_VERSION, ExtractiveLLM, build_messages, citations
from ragfn.runtime import Runtime
from ragfn.search import Caller
from ragfn.telemetry import tracer


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=4000)
    collection: str = "default"
    top_k: int = Field(8, ge=1, le=50)
    mode: Literal["dense", "lexical", "hybrid"] = "hybrid"
    stream: bool = False
    max_tokens: int = Field(256, ge=1, le=4096)
    budget_tokens: int = Field(1500, ge=50, le=32000)


@dataclass
class Prepared:
    """Everything before generation: a cache hit, or the passages and the messages for the LLM."""

    hit: CacheHit | None = None
    passages: list[Passage] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    cache: str = "off"  # hit | miss | off
    degraded: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    scope: CacheScope | None = None
    vector: np.ndarray | None = None  # the question's embedding, once computed: lookup and store share it


def _citation_json(passage: Passage) -> dict:
    return {"n": passage.number, "source": passage.source, "chunk_id": passage.chunk_id, "text": passage.text,
            "heading_path": passage.heading_path, "start": passage.start, "end": passage.end}


class Gateway:
    def __init__(self, runtime: Runtime, llm: LLM, *, fallback: LLM | None = None) -> None:
        self.runtime = runtime
        self.llm = llm
        self.fallback = fallback or ExtractiveLLM()
        self.breakers = {name: CircuitBreaker(name, failure_threshold=3, reset_seconds=10.0)
                         for name in ("cache", "vector-store", "llm")}

    def _timed(self, prepared: Prepared, stage: str, started: float) -> None:
        prepared.timings_ms[stage] = round((time.perf_counter() - started) * 1000, 2)

    def prepare(self, request: AskRequest, caller: Caller) -> Prepared:
        prepared = Prepared()
        span = trace.get_current_span()
        cache = self.runtime.cache
        if cache is not None:
            started = time.perf_counter()
            prepared.scope = CacheScope(caller.tenant, caller.groups, request.collection,
                                        self.runtime.embedder.name, self.llm.name, PROMPT_VERSION)
            try:
                prepared.hit = self.breakers["cache"].call(
                    cache.lookup, request.question, prepared.scope, lambda q: self._vector(prepared, q))
                prepared.cache = "hit" if prepared.hit else "miss"
            except Unavailable:
                prepared.degraded.append("cache-unavailable")
                prepared.scope = None
            self._timed(prepared, "cache", started)
        span.set_attribute("ragfn.cache.hit", prepared.cache == "hit")
        if prepared.hit:
            return prepared
        started = time.perf_counter()
        search = self.runtime.retriever.search
        try:
            hits = self.breakers["vector-store"].call(search, request.question, mode=request.mode,
                                                      collection=request.collection, top_k=request.top_k,
                                                      caller=caller)
        except Unavailable:
            prepared.degraded.append("vector-store-unavailable")
            hits = search(request.question, mode="lexical", collection=request.collection, top_k=request.top_k,
                          caller=caller) if request.mode != "lexical" else []
        self._timed(prepared, "retrieve", started)
        span.set_attributes({"ragfn.retrieval.count": len(hits),
                             "ragfn.retrieval.top_score": hits[0].score if hits else 0.0})
        prepared.passages = assemble_context(hits, request.budget_tokens)
        prepared.messages = build_messages(request.question, prepared.passages)
        return prepared

    def ask(self, request: AskRequest, caller: Caller) -> dict:
        with tracer().start_as_current_span("ragfn.ask") as span:
            prepared = self.prepare(request, caller)
            if prepared.hit:
                return self._result(prepared, prepared.hit.answer["answer"], prepared.hit.answer["citations"])
            started = time.perf_counter()
            try:
                completion = self.breakers["llm"].call(self.llm.complete, prepared.messages,
                                                       max_tokens=request.max_tokens)
            except Unavailable:
                prepared.degraded.append("llm-unavailable")
                completion = self.fallback.complete(prepared.messages, max_tokens=request.max_tokens)
            self._timed(prepared, "generate", started)
            cited = [_citation_json(p) for p in citations(completion.text, prepared.passages)]
            partial = completion.finish_reason == "length"
            self._store(request, prepared, completion.text, cited, partial)
            span.set_attribute("ragfn.fallback.reason", ",".join(prepared.degraded))
            return self._result(prepared, completion.text, cited)

    def stream(self, request: AskRequest, caller: Caller) -> Iterator[tuple[str, object]]:
        """("token", text)*, ("citations", [...]), ("final", {...}): the server-sent events of one answer."""
        with tracer().start_as_current_span("ragfn.ask", attributes={"ragfn.stream": True}):
            prepared = self.prepare(request, caller)
            if prepared.hit:
                yield "token", prepared.hit.answer["answer"]
                yield "citations", prepared.hit.answer["citations"]
                yield "final", self._final(prepared)
                return
            started = time.perf_counter()
            try:
                deltas = self.breakers["llm"].call(self.llm.stream, prepared.messages, max_tokens=request.max_tokens)
            except Unavailable:
                prepared.degraded.append("llm-unavailable")
                yield "status", {"degraded": "llm-unavailable", "message": "the model is warming up or down; "
                                 "answering from the passages"}
                deltas = self.fallback.stream(prepared.messages, max_tokens=request.max_tokens)
            parts = []
            try:
                for delta in deltas:
                    parts.append(delta)
                    yield "token", delta
            finally:
                getattr(deltas, "close", lambda: None)()  # a client that went away cancels the upstream stream
            self._timed(prepared, "generate", started)
            text = "".join(parts)
            cited = [_citation_json(p) for p in citations(text, prepared.passages)]
            yield "citations", cited
            self._store(request, prepared, text, cited, getattr(deltas, "finish_reason", "stop") == "length")
            yield "final", self._final(prepared)

    def _store(self, request: AskRequest, prepared: Prepared, text: str, cited: list[dict], partial: bool) -> None:
        if prepared.scope is None or prepared.degraded or partial or not cited:
            return  # only complete, cited, non-degraded answers are worth repeating
        answer = {"answer": text, "citations": cited}
        documents = sorted({(request.collection, c["source"]) for c in cited})
        try:
            self.breakers["cache"].call(self.runtime.cache.store, request.question,
                                        self._vector(prepared, request.question), prepared.scope, answer, documents)
        except Unavailable:
            prepared.degraded.append("cache-unavailable")

    def _vector(self, prepared: Prepared, question: str) -> np.ndarray:
        if prepared.vector is None:
            prepared.vector = self.runtime.embedder.embed([question])[0]
        return prepared.vector

    def _final(self, prepared: Prepared) -> dict:
        return {"cache": prepared.cache, "degraded": "+".join(prepared.degraded) or None,
                "timings_ms": prepared.timings_ms}

    def _result(self, prepared: Prepared, text: str, cited: list[dict]) -> dict:
        return {"answer": text, "citations": cited, **self._final(prepared)}
