"""The gateway's two backends as small protocols, Retrieval and AnswerCache, with their in-process implementations.

The HTTP implementations (the retrieve and cache-check functions as remote services) are in `ragfn.gateway.remote`;
`Runtime.retrieval` and `Runtime.answer_cache` choose one from the settings. Each implementation owns a circuit
breaker, so a dependency that keeps failing costs one fast `CircuitOpen` (an `Unavailable`) per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from ragfn.cache.redis_cache import CacheHit, CacheScope
from ragfn.core.errors import Unavailable
from ragfn.gateway.breaker import CircuitBreaker
from ragfn.retrieval.context import Passage, assemble_context
from ragfn.retrieval.dense import Caller, Hit

Mode = Literal["dense", "lexical", "hybrid"]
CacheStatus = Literal["hit", "miss", "off"]
TOP_SCORES = 5  # how many retrieval scores a trace keeps


def retrieval_attributes(hits: list[Hit], passages: list[Passage]) -> dict:
    """The RAG span attributes of one retrieval, wherever it ran (the retrieve function or the gateway)."""
    return {"rag.retrieval.count": len(hits),
            "rag.retrieval.top_scores": [round(hit.score, 4) for hit in hits[:TOP_SCORES]],
            "rag.retrieval.passages": len(passages)}


def gateway_breaker(name: str) -> CircuitBreaker:
    """The gateway's breaker policy: three failures in a row open the circuit, a trial call follows 3 s later. A
    trial every 3 s costs a dead dependency one call (bounded by its timeout) per 3 s, and brings answers back
    within a few seconds of its return (bench/chaos.py measured 6.4 s with 10 s, above the 5 s target)."""
    return CircuitBreaker(name, failure_threshold=3, reset_seconds=3.0)


@dataclass(frozen=True)
class RetrievalQuery:
    question: str
    caller: Caller
    collection: str = "default"
    top_k: int = 8
    mode: Mode = "hybrid"
    budget_tokens: int = 1500
    vector: np.ndarray | None = None  # in-process only: the cache lookup's embedding of the question, reused


@dataclass
class Retrieved:
    hits: list[Hit]
    passages: list[Passage]
    degraded: list[str] = field(default_factory=list)  # e.g. ["vector-store-unavailable"]: lexical results only

    def to_json(self) -> dict:
        """The retrieve function's response body (`timings_ms` is added by the function)."""
        return {"hits": [hit.to_json() for hit in self.hits], "passages": [p.to_json() for p in self.passages],
                "degraded": "+".join(self.degraded) or None}


class Retrieval(Protocol):
    breaker: CircuitBreaker
    remote: bool

    def retrieve(self, query: RetrievalQuery) -> Retrieved:
        """Passages for the caller; raises Unavailable only when no retrieval at all was possible."""
        ...


class LocalRetrieval:
    """The hybrid retriever in this process. A vector-store fault falls back to the lexical snapshot."""

    remote = False

    def __init__(self, retriever, *, breaker: CircuitBreaker | None = None) -> None:
        self.retriever = retriever
        self.breaker = breaker or gateway_breaker("vector-store")

    def retrieve(self, query: RetrievalQuery) -> Retrieved:
        degraded: list[str] = []
        kwargs = {"collection": query.collection, "top_k": query.top_k, "caller": query.caller}
        try:
            hits = self.breaker.call(self.retriever.search, query.question, mode=query.mode, vector=query.vector,
                                     **kwargs)
        except Unavailable:
            degraded.append("vector-store-unavailable")
            hits = []
            if query.mode != "lexical":
                try:  # the BM25 snapshot answers without Chroma, once this process has built it
                    hits = self.retriever.search(query.question, mode="lexical", **kwargs)
                except Unavailable:
                    pass  # no snapshot yet: an answer without passages, still marked degraded
        return Retrieved(hits, assemble_context(hits, query.budget_tokens), degraded)


@dataclass(frozen=True)
class AnswerKey:
    """The gateway's part of a cache scope; the cache adds its embedder's name (see `CacheScope`)."""

    caller: Caller
    collection: str
    model: str
    prompt_version: str


@dataclass
class Lookup:
    status: CacheStatus
    hit: CacheHit | None = None
    vector: np.ndarray | None = None  # in-process only: the question's embedding, so store() need not embed again


class AnswerCache(Protocol):
    breaker: CircuitBreaker
    remote: bool

    def lookup(self, question: str, key: AnswerKey) -> Lookup:
        """A hit, a miss, or "off"; raises Unavailable (or another RagfnError) when the cache cannot answer."""
        ...

    def store(self, question: str, key: AnswerKey, answer: dict, documents: list[str], lookup: Lookup) -> bool:
        """Keep a complete answer citing `documents` (document ids in key.collection); False when refused."""
        ...


class LocalAnswerCache:
    """The semantic cache (RedisCache or MemoryCache) driven from this process, with its embedder."""

    remote = False

    def __init__(self, cache, embedder, *, breaker: CircuitBreaker | None = None) -> None:
        self.cache = cache
        self.embedder = embedder
        self.breaker = breaker or gateway_breaker("cache")

    def scope(self, key: AnswerKey) -> CacheScope:
        return CacheScope(key.caller.tenant, key.caller.groups, key.collection, self.embedder.name, key.model,
                          key.prompt_version)

    def lookup(self, question: str, key: AnswerKey) -> Lookup:
        result = Lookup("miss")

        def embed(text: str) -> np.ndarray:
            result.vector = self.embedder.embed([text])[0]
            return result.vector

        result.hit = self.breaker.call(self.cache.lookup, question, self.scope(key), embed)
        result.status = "hit" if result.hit else "miss"
        if result.hit is None and result.vector is None:  # an empty scope needs none, but dense search and store do
            embed(question)
        return result

    def store(self, question: str, key: AnswerKey, answer: dict, documents: list[str], lookup: Lookup) -> bool:
        if lookup.vector is None:  # the exact tier answered the lookup, or no vector was cached in the scope
            lookup.vector = self.embedder.embed([question])[0]
        cited = [(key.collection, document) for document in documents]
        return self.breaker.call(self.cache.store, question, lookup.vector, self.scope(key), answer, cited)
