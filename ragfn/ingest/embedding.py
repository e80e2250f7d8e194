"""fastembed text embeddings, batched by token length so that short chunks are not padded to long ones."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ragfn.core.config import Settings
from ragfn.core.errors import ConfigError


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
        self._loading = threading.Lock()
        self._lengths = None  # a tokenizer for sorting and batching by length

    @classmethod
    def from_settings(cls, settings: Settings) -> FastEmbedder:
        path = settings.resolved_embed_model_path()
        return cls(settings.embed_model, model_path=str(path) if path else None,
                   batch_size=settings.embed_batch_size, threads=settings.embed_threads,
                   cache_dir=str(settings.home / "models" / "fastembed-cache"))

    def warm_up(self) -> None:
        if self._model is not None:
            return
        with self._loading:  # functions-framework serves requests on several threads
            if self._model is None:
                self._load()

    def _load(self) -> None:
        from fastembed import TextEmbedding

        try:
            model = TextEmbedding(self.name, cache_dir=self.cache_dir, threads=self.threads,
                                  specific_model_path=self.model_path)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"cannot load embedding model {self.name!r}: {exc}",
                              hint="set RAGFN_EMBED_MODEL_PATH to a local ONNX folder "
                                   "(python scripts/fetch_models.py builds one) or allow the download") from exc
        self._dimensions = int(next(iter(model.embed(["dimension probe"]))).shape[0])
        self._lengths = _length_tokenizer(model)
        self._model = model  # last: other threads test it without the lock

    @property
    def dimensions(self) -> int:
        self.warm_up()
        assert self._dimensions is not None
        return self._dimensions

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        # fastembed pads each batch to its longest member, and compute grows with the padded length: texts are
        # sorted by the model's own token count and cut into the batches that waste the least (plan_batches).
        lengths = self._token_lengths(texts)
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        vectors = np.empty((len(texts), self.dimensions), dtype=np.float32)
        for start, end in plan_batches([lengths[i] for i in order], self.batch_size):
            members = order[start:end]
            embedded = self._model.embed([texts[i] for i in members], batch_size=len(members))
            for position, vector in zip(members, embedded, strict=True):
                vectors[position] = vector
        return vectors

    def _token_lengths(self, texts: Sequence[str]) -> list[int]:
        if self._lengths is None:  # no tokenizer to ask: characters are a rough proxy
            return [len(text) // 4 + 2 for text in texts]
        return [len(encoding.ids) for encoding in self._lengths.encode_batch(list(texts))]


# What one more ONNX call costs, in padded tokens: per-call work (tokenising, tensors, session.run) measured on
# MiniLM at about 2-3 ms, while one token costs about 0.15-0.2 ms on two cores.
BATCH_OVERHEAD_TOKENS = 16


def plan_batches(lengths: Sequence[int], max_batch: int, overhead: int = BATCH_OVERHEAD_TOKENS) -> list[tuple[int, int]]:
    """Cut ascending `lengths` into runs of at most `max_batch` minimising the padded tokens computed, sum of
    (run size * its longest length + overhead). Exact dynamic programme, O(n * max_batch)."""
    n = len(lengths)
    best, cut = [0] + [0] * n, [0] * (n + 1)
    for end in range(1, n + 1):
        longest = lengths[end - 1]  # ascending: the last member of a run is its longest
        best[end], cut[end] = min((best[start] + (end - start) * longest + overhead, start)
                                  for start in range(max(0, end - max_batch), end))
    runs, end = [], n
    while end > 0:
        runs.append((cut[end], end))
        end = cut[end]
    return runs[::-1]


def _length_tokenizer(model):
    """A copy of fastembed's own tokenizer (same truncation, so the model's real input lengths) without padding,
    or None when this fastembed version keeps it elsewhere."""
    tokenizer = getattr(getattr(model, "model", None), "tokenizer", None)
    if tokenizer is None or not hasattr(tokenizer, "to_str"):
        return None
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(tokenizer.to_str())
    copy.no_padding()
    return copy
