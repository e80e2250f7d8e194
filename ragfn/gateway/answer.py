"""One question's request and what the gateway learns while answering it: the passages, the cache's verdict, who
wrote the answer, the gate's verdict, timings."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ragfn.cache.redis_cache import CacheHit
from ragfn.gateway.backends import AnswerKey, Lookup
from ragfn.gateway.gate import GateVerdict
from ragfn.retrieval.context import Passage
from ragfn.retrieval.dense import Caller, Hit


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
    hits: list[Hit] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    retrieved: bool = False  # False when retrieval failed outright: there is nothing to answer from
    cache: str = "off"  # hit | miss | off
    degraded: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    key: AnswerKey | None = None
    lookup: Lookup | None = None  # set on a miss only: what the answer may be stored under
    cited: int = 0
    inferred: bool = False  # the model cited nothing; the citations come from ragfn.gateway.attribution
    truncated: bool = False  # generation stopped at max_tokens: the answer is cut off
    answer_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # what feedback names
    model: str | None = None  # the model that wrote the answer shown ("extractive" for the engine)
    provider: str | None = None  # primary | fallback | extractive; None when no model was asked
    gate: GateVerdict | None = None  # None when the gate did not judge (gate off, a cache hit, the extractive engine)
    withheld: dict | None = None  # the model's answer the gate refused (answer, citations, truncated): for
    # `ragfn eval --answers`, never shown
    request: AskRequest | None = None
    caller: Caller | None = None


def citation_json(passage: Passage) -> dict:
    return {"n": passage.number, "source": passage.source, "chunk_id": passage.chunk_id, "text": passage.text,
            "heading_path": passage.heading_path, "start": passage.start, "end": passage.end}
