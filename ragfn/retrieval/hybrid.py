"""Dense, lexical or both fused (standardised scores or reciprocal ranks): the modes behind `retrieve`."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Literal

import numpy as np

from ragfn.core.errors import BadEvent
from ragfn.retrieval.dense import Caller, DenseRetriever, Hit
from ragfn.retrieval.lexical import LexicalRetriever
from ragfn.retrieval.rerank import GuardedReranker, Reranker
from ragfn.retrieval.sections import SECTIONS, Sections, by_section, standardise
from ragfn.retrieval.window import POOLS, Pool, windowed

Mode = Literal["dense", "lexical", "hybrid"]
MODES: tuple[Mode, ...] = ("dense", "lexical", "hybrid")


Fusion = Literal["scores", "rrf"]


class HybridRetriever:
    """Dense and BM25 lists fused into one ranking, each fetched `depth` deep so fusion can promote what one list
    ranks low. Two fusions:

    - "scores" (default): each list's scores are standardised (z-scores over the list) and summed with the weights;
      a chunk missing from a list gets that list's lowest standardised score. It keeps *how much* better a chunk is,
      which ranks alone throw away.
    - "rrf": reciprocal-rank fusion, sum of weight / (rrf_k + rank); needs no score distributions at all.

    Defaults measured on the Python FAQ set (docs/benchmarks.md): with stemmed BM25, score fusion at lexical weight
    0.3 beat dense-only on every metric and beat RRF; equal weights let the weaker lexical list pull good dense
    hits down.

    `sections` (hybrid mode only): "off" returns chunks in fused order; "max", "sum" and "fuse" rank the chunks'
    sections and return the best chunk of each, best section first (ragfn.retrieval.sections, docs/benchmarks.md).
    `window` (hybrid mode only, 0 = off): each chunk also scores `window` times its adjacent chunks' fused scores,
    their max or mean (`window_pool`), before ordering or sections (ragfn.retrieval.window, docs/benchmarks.md).
    """

    def __init__(self, dense: DenseRetriever, lexical: LexicalRetriever, *, dense_weight: float = 1.0,
                 lexical_weight: float = 0.3, fusion: Fusion = "scores", rrf_k: int = 60, depth: int = 50,
                 reranker: Reranker | None = None, rerank_depth: int = 30, sections: Sections = "off",
                 section_decay: float = 0.5, window: float = 0.0, window_pool: Pool = "max") -> None:
        if fusion not in ("scores", "rrf"):
            raise BadEvent(f"unknown fusion {fusion!r}", hint="use scores or rrf")
        if sections not in SECTIONS:
            raise BadEvent(f"unknown section ranking {sections!r}", hint=f"use one of {', '.join(SECTIONS)}")
        self.sections, self.section_decay = sections, section_decay
        if window_pool not in POOLS or window < 0:
            raise BadEvent(f"bad neighbour window {window!r}/{window_pool!r}",
                           hint=f"window >= 0, pooled by one of {', '.join(POOLS)}")
        self.window, self.window_pool = window, window_pool
        self.dense, self.lexical = dense, lexical
        self.weights = {"dense": dense_weight, "lexical": lexical_weight}
        self.fusion, self.rrf_k, self.depth = fusion, rrf_k, depth
        self.reranker = GuardedReranker(reranker) if reranker is not None else None
        self.rerank_depth = rerank_depth

    def search(self, question: str, *, mode: Mode = "hybrid", collection: str = "default", top_k: int = 10,
               caller: Caller = Caller(), vector: np.ndarray | None = None) -> list[Hit]:
        """The top_k chunks the caller may read, best first; reranked when a reranker is configured and loads.
        `vector` is the question's embedding when the caller has it already (the gateway, after a cache miss)."""
        if mode not in MODES:
            raise BadEvent(f"unknown retrieval mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
        if self.reranker is None or self.reranker.broken is not None:
            return self._retrieve(question, mode, collection, top_k, caller, vector)
        candidates = self._retrieve(question, mode, collection, max(top_k, self.rerank_depth), caller, vector)
        scores = self.reranker.scores(question, [hit.text for hit in candidates]) if candidates else []
        if scores is None:  # the model failed to load just now: keep the retrieval order
            return candidates[:top_k]
        order = sorted(range(len(candidates)), key=lambda i: -scores[i])[:top_k]
        return [replace(candidates[i], score=scores[i]) for i in order]

    def _retrieve(self, question: str, mode: Mode, collection: str, top_k: int, caller: Caller,
                  vector: np.ndarray | None) -> list[Hit]:
        if mode == "dense":
            return self.dense.search(question, collection=collection, top_k=top_k, caller=caller, vector=vector)
        if mode == "lexical":
            return self.lexical.search(question, collection=collection, top_k=top_k, caller=caller)
        depth = max(self.depth, top_k)
        lists = {"dense": self.dense.search(question, collection=collection, top_k=depth, caller=caller,
                                            vector=vector),
                 "lexical": self.lexical.search(question, collection=collection, top_k=depth, caller=caller)}
        fused = self._fuse(lists)
        hits = {hit.chunk_id: hit for ranked in lists.values() for hit in ranked}
        if self.window:  # the whole fused pool, so a neighbour below the top_k cut still counts
            fused = windowed(fused, hits, self.window, self.window_pool)
        if self.sections == "off":
            order = sorted(fused, key=lambda chunk_id: (-fused[chunk_id], chunk_id))[:top_k]
        else:  # the whole fused pool is grouped, so a section's weaker chunks count before the cut to top_k
            order = by_section(fused, hits, self.sections, decay=self.section_decay, lists=lists,
                               weights=self.weights)[:top_k]
        return [Hit(chunk_id=i, source=hits[i].source, text=hits[i].text, score=fused[i], metadata=hits[i].metadata)
                for i in order]

    def _fuse(self, lists: dict[str, list[Hit]]) -> dict[str, float]:
        fused: dict[str, float] = defaultdict(float)
        if self.fusion == "rrf":
            for name, ranked in lists.items():
                for rank, hit in enumerate(ranked, start=1):
                    fused[hit.chunk_id] += self.weights[name] / (self.rrf_k + rank)
            return fused
        every = {hit.chunk_id for ranked in lists.values() for hit in ranked}
        for name, ranked in lists.items():
            if not ranked:
                continue
            standard = standardise({hit.chunk_id: hit.score for hit in ranked})
            floor = min(standard.values())
            for chunk_id in every:
                fused[chunk_id] += self.weights[name] * standard.get(chunk_id, floor)
        return fused
