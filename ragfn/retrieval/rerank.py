"""An optional cross-encoder reranker (fastembed TextCrossEncoder) that reorders retrieved candidates.

Off unless RAGFN_RERANK_MODEL names a model: no cross-encoder weights can be had offline here, and a retriever must
work without one. Online, fastembed downloads the model once into RAGFN_HOME/models/fastembed-cache:

    RAGFN_RERANK_MODEL=Xenova/ms-marco-MiniLM-L-6-v2 ragfn retrieve "How do I sort a dict by value?"

or, offline, point RAGFN_RERANK_MODEL_PATH at a folder holding that model's `model.onnx` and tokenizer files.
A configured model that cannot be loaded is logged once, naming the model and the fix, and retrieval goes on
unreranked: a missing reranker costs quality, never an answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from ragfn.core.config import Settings
from ragfn.core.errors import ConfigError

log = logging.getLogger("ragfn.rerank")


class Reranker(Protocol):
    name: str

    def scores(self, question: str, passages: Sequence[str]) -> list[float]:
        """One relevance score per passage, higher is better; raises ConfigError when the model is unusable."""
        ...


class CrossEncoderReranker:
    """fastembed's TextCrossEncoder, loaded on first use (or by warm_up) and shared by the serving threads.

    >>> reranker = CrossEncoderReranker("Xenova/ms-marco-MiniLM-L-6-v2")
    >>> reranker.scores("what is a generator?", ["A generator yields values lazily.", "Lists are mutable."])
    [7.1, -10.9]
    """

    def __init__(self, name: str, *, model_path: str | None = None, threads: int | None = None,
                 cache_dir: str | None = None, batch_size: int = 32) -> None:
        self.name, self.model_path, self.threads = name, model_path, threads
        self.cache_dir, self.batch_size = cache_dir, batch_size
        self._model = None
        self._loading = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> CrossEncoderReranker | None:
        if not settings.rerank_model:
            return None
        path = settings.rerank_model_path
        return cls(settings.rerank_model, model_path=str(path) if path else None, threads=settings.embed_threads,
                   cache_dir=str(settings.home / "models" / "fastembed-cache"))

    def warm_up(self) -> None:
        if self._model is None:
            with self._loading:
                if self._model is None:
                    self._model = self._load()

    def _load(self):
        from fastembed.rerank.cross_encoder import TextCrossEncoder

        try:
            # a local folder must not fall back to a download: offline that is ~40 s of retries before failing
            extra = {"specific_model_path": self.model_path, "local_files_only": True} if self.model_path else {}
            return TextCrossEncoder(self.name, cache_dir=self.cache_dir, threads=self.threads, **extra)
        except Exception as exc:  # fastembed raises ValueError, OSError and onnxruntime's own errors
            raise ConfigError(f"cannot load reranker model {self.name!r}: {exc}",
                              hint="unset RAGFN_RERANK_MODEL to run without a reranker, allow fastembed's download, "
                                   "or set RAGFN_RERANK_MODEL_PATH to a folder laid out like the model's Hugging Face "
                                   "repository (its ONNX file and tokenizer.json)"
                              ) from exc

    def scores(self, question: str, passages: Sequence[str]) -> list[float]:
        self.warm_up()
        return [float(s) for s in self._model.rerank(question, list(passages), batch_size=self.batch_size)]


class GuardedReranker:
    """Wraps a reranker so that one that cannot load is reported once and then skipped, not retried per query."""

    def __init__(self, reranker: Reranker) -> None:
        self.reranker, self.name = reranker, reranker.name
        self.broken: ConfigError | None = None

    def scores(self, question: str, passages: Sequence[str]) -> list[float] | None:
        if self.broken is not None:
            return None
        try:
            return self.reranker.scores(question, passages)
        except ConfigError as exc:
            self.broken = exc
            log.error("reranking is off: %s", exc)  # str() carries the hint
            return None
