"""fastembed text embeddings, batched by length so that short chunks are not padded to long ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ragfn.config import Settings
from ragfn.errors import ConfigError


class Embedder(Protocol):
    name: str

    @property
    def dimensions(self) -> int: ...

    def warm_up(self) -> None: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class FastEmbedder:
    """fastembed's TextEmbedding, by name (downloaded once, online) or from a local ONNX folder (offline).

    >>> embedder = FastEmbedder.from_settings(settings)   # cheap
    >>> embedder.warm_up()                                # loads the ONNX session
    >>> embedder.embed(["what is a generator?"]).shape
    (1, 384)
    """

    def __init__(self, name: str, *, model_path: str | None = None, batch_size: int = 32,
                 threads: int | None = None, cache_dir: str | None = None) -> None:
        self.name = name
        self.model_path = model_path
        self.batch_size = batch_size
        self.threads = threads
        self.cache_dir = cache_dir
        self._model = None
        self._dimensions: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> FastEmbedder:
        path = settings.resolved_embed_model_path()
        return cls(settings.embed_model, model_path=str(path) if path else None,
                   batch_size=settings.embed_batch_size, threads=settings.embed_threads,
                   cache_dir=str(settings.home / "models" / "fastembed-cache"))

    def warm_up(self) -> None:
        if self._model is not None:
            return
        from fastembed import TextEmbedding

        try:
            self._model = TextEmbedding(self.name, cache_dir=self.cache_dir, threads=self.threads,
                                        specific_model_path=self.model_path)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"cannot load embedding model {self.name!r}: {exc}",
                              hint="set RAGFN_EMBED_MODEL_PATH to a local ONNX folder "
                                   "(python scripts/fetch_models.py builds one) or allow the download") from exc
        self._dimensions = int(next(iter(self._model.embed(["dimension probe"]))).shape[0])

    @property
    def dimensions(self) -> int:
        self.warm_up()
        assert self._dimensions is not None
        return self._dimensions

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        # fastembed pads each batch to its longest member; sorting by length keeps batches uniform,
        # which is most of the speed difference between mixed and homogeneous batches.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        embedded = self._model.embed([texts[i] for i in order], batch_size=self.batch_size)
        for position, vector in zip(order, embedded, strict=True):
            vectors[position] = vector
        return vectors
