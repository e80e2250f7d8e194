"""Dense search over the index (any backend), with tenant and ACL-group filters applied inside the search itself."""

from __future__ import annotations

import numpy as np

from ragfn.core.errors import BadEvent
from ragfn.ingest.embedding import Embedder
from ragfn.store.base import Caller, Hit, Index

__all__ = ["Caller", "DenseRetriever", "Hit"]  # Caller and Hit live with the store; most callers import them here


class DenseRetriever:
    """Embeds the question and asks the index for the nearest chunks the caller may read.

    >>> retriever = DenseRetriever(ChromaIndex(settings), FastEmbedder.from_settings(settings))
    >>> [hit.source for hit in retriever.search("How do I sort a list?", caller=Caller("acme", ("eng",)))]
    """

    def __init__(self, index: Index, embedder: Embedder) -> None:
        self.index = index
        self.embedder = embedder

    def search(self, question: str, *, collection: str = "default", top_k: int = 10,
               caller: Caller = Caller(), vector: np.ndarray | None = None) -> list[Hit]:
        """`vector`: the question's embedding by this retriever's embedder, when the caller already has it."""
        if not question.strip():
            raise BadEvent("the question is empty")
        if not 1 <= top_k <= 1000:
            raise BadEvent(f"top_k={top_k} is out of range", hint="use 1 to 1000")
        if vector is None:
            vector = self.embedder.embed([question])[0]
        return self.index.dense_search(collection, vector, top_k=top_k, caller=caller)
