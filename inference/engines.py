"""Generation engines: one small protocol, an extractive engine (no model) and llama.cpp (any GGUF, CPU).

An engine turns chat messages into a stream of text pieces. `load()` does the slow part once (the predictor's
`load()` calls it and reports the time); `stream()` yields `Piece`s and stops early when the caller closes the
iterator, which is how a client disconnect cancels generation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ragfn.errors import ConfigError


@dataclass(frozen=True)
class GenerationRequest:
    messages: list[dict]
    max_tokens: int = 256
    temperature: float = 0.0
    stop: tuple[str, ...] = ()


@dataclass
class Piece:
    text: str
    finish_reason: str | None = None  # "stop" | "length" on the last piece
    usage: dict = field(default_factory=dict)  # prompt_tokens / completion_tokens, on the last piece


class Engine(Protocol):
    name: str

    def load(self) -> None: ...

    def stream(self, request: GenerationRequest) -> Iterator[Piece]: ...


class ExtractiveEngine:
    """ragfn's extractive answer, word by word: deterministic, citing the numbered passages in the prompt."""

    name = "extractive"

    def load(self) -> None:
        pass

    def stream(self, request: GenerationRequest) -> Iterator[Piece]:
        from ragfn.llm import ExtractiveLLM

        text = ExtractiveLLM().complete(request.messages, max_tokens=request.max_tokens).text
        for stop in request.stop:
            text = text.split(stop, 1)[0]
        words = text.split(" ")
        finish = "length" if len(words) > request.max_tokens else "stop"
        words = words[:request.max_tokens]
        for i, word in enumerate(words):
            last = i == len(words) - 1
            yield Piece(word if i == 0 else " " + word, finish if last else None,
                        {"prompt_tokens": 0, "completion_tokens": len(words)} if last else {})


class LlamaCppEngine:
    """llama-cpp-python on CPU with any chat GGUF. One model, one generation at a time (llama.cpp contexts are not
    re-entrant); the predictor's concurrency limit queues the rest."""

    def __init__(self, model_path: Path, *, context_tokens: int = 2048, threads: int | None = None) -> None:
        self.model_path, self.context_tokens, self.threads = Path(model_path), context_tokens, threads
        self.name = self.model_path.stem
        self._llama = None
        self._lock = threading.Lock()

    def load(self) -> None:
        if not self.model_path.is_file():
            raise ConfigError(f"no GGUF model at {self.model_path}",
                              hint="set RAGFN_LLM_MODEL to a .gguf file (python scripts/fetch_llm.py fetches one)")
        from llama_cpp import Llama

        try:
            self._llama = Llama(model_path=str(self.model_path), n_ctx=self.context_tokens, n_threads=self.threads,
                                verbose=False)
        except ValueError as exc:
            raise ConfigError(f"llama.cpp cannot load {self.model_path}: {exc}") from exc

    def stream(self, request: GenerationRequest) -> Iterator[Piece]:
        if self._llama is None:
            raise ConfigError("the llama.cpp engine is not loaded", hint="call load() first")
        with self._lock:
            chunks = self._llama.create_chat_completion(
                messages=request.messages, max_tokens=request.max_tokens, temperature=request.temperature,
                stop=list(request.stop) or None, stream=True)
            produced = 0
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    text = choice.get("delta", {}).get("content") or ""
                    produced += bool(text)
                    finish = choice.get("finish_reason")
                    if text or finish:
                        yield Piece(text, finish, {"completion_tokens": produced} if finish else {})
            finally:
                chunks.close()  # a closed client stops the generation here, releasing the model
