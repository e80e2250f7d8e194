"""cache-check: `handle` answers lookups and stores over JSON; `invalidate` evicts on document.indexed/removed.

Both targets run from this file: `--target handle` is the query-path service, `--target invalidate` the Trigger
subscriber. They share nothing but Redis, so they scale apart.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ragfn import events
from ragfn.cache import CacheScope
from ragfn.events import DocumentIndexed, DocumentRemoved
from ragfn.handler import InboundEvent, cloud_function, json_function
from ragfn.publish import StageResult
from ragfn.runtime import Runtime


class CacheRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op: Literal["lookup", "store"]
    question: str = Field(min_length=1, max_length=4000)
    tenant: str | None = None
    groups: list[str] = Field(default_factory=list)
    collection: str = "default"
    model: str = Field(min_length=1)
    prompt_version: str = Field(min_length=1)
    answer: dict | None = None  # store only
    cited: list[str] = Field(default_factory=list, description="document ids the answer cites (store only)")


@json_function("cache-check", request_model=CacheRequest)
def handle(request: CacheRequest, runtime: Runtime) -> dict:
    if runtime.redis is None:  # other processes (the invalidate target) could not evict an in-memory entry
        return {"cache": "off"}
    scope = CacheScope(request.tenant, tuple(request.groups), request.collection, runtime.embedder.name,
                       request.model, request.prompt_version)
    if request.op == "store":
        if request.answer is None:
            from ragfn.errors import BadEvent

            raise BadEvent("op=store needs an answer")
        vector = runtime.embedder.embed([request.question])[0]
        stored = runtime.cache.store(request.question, vector, scope, request.answer,
                                     [(request.collection, document_id) for document_id in request.cited])
        return {"cache": "on", "stored": stored}
    hit = runtime.cache.lookup(request.question, scope, lambda text: runtime.embedder.embed([text])[0])
    if hit is None:
        return {"cache": "miss"}
    return {"cache": "hit", "tier": hit.tier, "answer": hit.answer, "question": hit.question,
            "similarity": round(hit.similarity, 4)}


@cloud_function("cache-invalidate", accepts={events.DOCUMENT_INDEXED: DocumentIndexed,
                                             events.DOCUMENT_REMOVED: DocumentRemoved}, reply_with_event=False)
def invalidate(event: InboundEvent, runtime: Runtime) -> StageResult:
    if runtime.redis is None:
        return StageResult([], {"cache": "off", "evicted": 0})
    return StageResult([], {"evicted": runtime.cache.invalidate(event.data.collection, event.data.document_id)})
