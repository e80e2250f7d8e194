"""cache-check: `handle` answers lookups and stores over JSON; `invalidate` evicts on document.indexed/removed.

Both targets run from this file: `--target handle` is the query-path service (the gateway's remote cache when
RAGFN_CACHE_URL points here), `--target invalidate` the Trigger subscriber. They share nothing but Redis, so they
scale apart.

    {"op": "lookup", "question", "collection", "model", "prompt_version"}
        -> {"cache": "hit", "tier", "answer", "question", "similarity"} | {"cache": "miss"} | {"cache": "off"}
    {"op": "store", ..., "answer": {"answer", "citations"}, "cited": [document ids]}
        -> {"cache": "on", "stored": bool} | {"cache": "off"}
Redis down is a 503, so the gateway's breaker counts it and the answer goes on without the cache. The caller (tenant
and groups, which scope every entry) comes from the gateway's signed token only (ragfn.core.service_auth).
"""

from typing import Literal

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

from ragfn.core.errors import BadEvent
from ragfn.eventing import events
from ragfn.eventing.events import DocumentIndexed, DocumentRemoved
from ragfn.eventing.publish import StageResult
from ragfn.gateway.backends import AnswerKey, Lookup
from ragfn.retrieval.dense import Caller
from ragfn.serve.handler import InboundEvent, cloud_function, json_function
from ragfn.serve.runtime import Runtime


class CacheRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op: Literal["lookup", "store"]
    question: str = Field(min_length=1, max_length=4000)
    collection: str = "default"
    model: str = Field(min_length=1)
    prompt_version: str = Field(min_length=1)
    answer: dict | None = None  # store only
    cited: list[str] = Field(default_factory=list, description="document ids the answer cites (store only)")


@json_function("cache-check", request_model=CacheRequest)
def handle(request: CacheRequest, runtime: Runtime, caller: Caller) -> dict:
    span = trace.get_current_span()  # the function's span, opened by json_function
    span.set_attribute("rag.cache.op", request.op)
    if runtime.redis is None:  # other processes (the invalidate target) could not evict an in-memory entry
        span.set_attribute("rag.cache", "off")
        return {"cache": "off"}
    if request.op == "store" and request.answer is None:
        raise BadEvent("op=store needs an answer")
    cache = runtime.local_answer_cache  # never runtime.answer_cache: that may point back here
    key = AnswerKey(caller, request.collection, request.model, request.prompt_version)
    if request.op == "store":
        stored = cache.store(request.question, key, request.answer, request.cited, Lookup("miss"))
        span.set_attribute("rag.cache.stored", stored)
        return {"cache": "on", "stored": stored}
    lookup = cache.lookup(request.question, key)
    span.set_attribute("rag.cache", lookup.status)
    if lookup.hit is None:
        return {"cache": "miss"}
    span.set_attributes({"rag.cache.tier": lookup.hit.tier, "rag.cache.similarity": round(lookup.hit.similarity, 4)})
    return {"cache": "hit", "tier": lookup.hit.tier, "answer": lookup.hit.answer, "question": lookup.hit.question,
            "similarity": round(lookup.hit.similarity, 4)}


@cloud_function("cache-invalidate", accepts={events.DOCUMENT_INDEXED: DocumentIndexed,
                                             events.DOCUMENT_REMOVED: DocumentRemoved}, reply_with_event=False)
def invalidate(event: InboundEvent, runtime: Runtime) -> StageResult:
    if runtime.redis is None:
        return StageResult([], {"cache": "off", "evicted": 0})
    return StageResult([], {"evicted": runtime.cache.invalidate(event.data.collection, event.data.document_id)})
