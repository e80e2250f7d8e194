"""retrieve: a question in, the passages the caller may read out, ranked and cut to a token budget.

The caller (tenant and groups) comes from the gateway's signed token only (ragfn.core.service_auth); a body naming
a tenant or groups is refused.

With the vector store down it answers from the lexical snapshot and says so: `"degraded": "vector-store-unavailable"`.
"""

import time
from typing import Literal

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

from ragfn.gateway.backends import RetrievalQuery, retrieval_attributes
from ragfn.retrieval.dense import Caller
from ragfn.serve.handler import json_function
from ragfn.serve.runtime import Runtime


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=4000)
    collection: str = "default"
    top_k: int = Field(10, ge=1, le=100)
    mode: Literal["dense", "lexical", "hybrid"] = "hybrid"
    budget_tokens: int = Field(1500, ge=50, le=32000)


@json_function("retrieve", request_model=RetrieveRequest, uses_index=True)
def handle(request: RetrieveRequest, runtime: Runtime, caller: Caller) -> dict:
    started = time.perf_counter()
    query = RetrievalQuery(request.question, caller, request.collection, request.top_k, request.mode,
                           request.budget_tokens)
    retrieved = runtime.local_retrieval.retrieve(query)  # never runtime.retrieval: that may point back here
    attributes = {"rag.retrieval.mode": request.mode, "rag.degraded": bool(retrieved.degraded),
                  **retrieval_attributes(retrieved.hits, retrieved.passages)}
    if retrieved.degraded:
        attributes["rag.fallback.reason"] = "+".join(retrieved.degraded)
    trace.get_current_span().set_attributes(attributes)  # the function's span, opened by json_function
    return retrieved.to_json() | {"timings_ms": {"retrieve": round((time.perf_counter() - started) * 1000, 2)}}
