"""retrieve: a question in, the passages the caller may read out, ranked and cut to a token budget."""

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ragfn.context import assemble_context
from ragfn.handler import json_function
from ragfn.runtime import Runtime
from ragfn.search import Caller


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=4000)
    collection: str = "default"
    top_k: int = Field(10, ge=1, le=100)
    mode: Literal["dense", "lexical", "hybrid"] = "hybrid"
    tenant: str | None = None  # the gateway authenticates and sets these; retrieve is not exposed publicly
    groups: list[str] = Field(default_factory=list)
    budget_tokens: int = Field(1500, ge=50, le=32000)


@json_function("retrieve", request_model=RetrieveRequest)
def handle(request: RetrieveRequest, runtime: Runtime) -> dict:
    started = time.perf_counter()
    hits = runtime.retriever.search(request.question, mode=request.mode, collection=request.collection,
                                    top_k=request.top_k, caller=Caller(request.tenant, tuple(request.groups)))
    passages = assemble_context(hits, request.budget_tokens)
    return {"hits": [hit.to_json() for hit in hits], "passages": [p.to_json() for p in passages],
            "timings_ms": {"retrieve": round((time.perf_counter() - started) * 1000, 2)}}
