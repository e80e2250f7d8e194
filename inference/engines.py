"""Generation engines: one small protocol, an extractive engine (no model) and llama.cpp (any GGUF, CPU).

An engine turns chat messages (or a raw prompt) into a stream of text pieces. `load()` does the slow part once (the
predictor's `load()` calls it, in a thread, and reports the time). A blocking engine has `stream()`, which yields
`Piece`s and stops early when the caller closes the iterator; an asyncio engine (vLLM) has `astream()` instead, and
stops when the async iterator is closed. Closing is how a client disconnect cancels generation. `concurrency` is how
many generations the engine runs at once: the predictor queues requests beyond it.

The llama.cpp engine also stops on its own when the answer has become a repetition loop (`stop_on_loop`, on by
default; the rule is the groundedness gate's, `ragfn.gateway.answer_quality.LoopDetector`): a small model that loops
keeps looping to max_tokens, which for a whole (non-streamed) answer is all of the wait. Such an answer ends with
finish_reason "stop" and `stop_reason` "repetition" (vLLM's name for the field that says why a "stop" came).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ragfn.core.errors import BadEvent, ConfigError

LOOP = "repetition"  # Piece.stop_reason of an answer the loop stop ended


@dataclass(frozen=True)
class GenerationRequest:
    messages: list[dict] = field(default_factory=list)  # chat messages, or
    prompt: str | None = None  # a raw text prompt (/v1/completions): no chat template applied
    max_tokens: int = 256
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class Piece:
    text: str
    finish_reason: str | None = None  # "stop" | "length" on the last piece
    usage: dict = field(default_factory=dict)  # prompt_tokens / completion_tokens, on the last piece
    stop_reason: str | None = None  # on the last piece, why a "stop" came early: LOOP when the loop stop ended it


class Engine(Protocol):
    name: str
    concurrency: int

    def load(self) -> None: ...

    def stream(self, request: GenerationRequest) -> Iterator[Piece]: ...


class AsyncEngine(Protocol):
    name: str
    concurrency: int

    def load(self) -> None: ...

    def astream(self, request: GenerationRequest) -> AsyncIterator[Piece]: ...


class ExtractiveEngine:
    """ragfn's extractive answer, word by word: deterministic, citing the numbered passages in the prompt."""

    name = "extractive"
    concurrency = 8  # pure Python and fast: a few at once keep latency flat without starving the event loop

    def load(self) -> None:
        pass

    def stream(self, request: GenerationRequest) -> Iterator[Piece]:
        from ragfn.llm.client import WORD, ExtractiveLLM

        messages = request.messages or [{"role": "user", "content": request.prompt or ""}]
        done = ExtractiveLLM().complete(messages, max_tokens=request.max_tokens, stop=list(request.stop))
        words = WORD.findall(done.text) or [""]  # words stand in for tokens: there is no tokenizer
        for word in words[:-1]:
            yield Piece(word)
        yield Piece(words[-1], done.finish_reason,
                    {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens})


class LlamaCppEngine:
    """llama-cpp-python on CPU with any chat GGUF. One model, one generation at a time (llama.cpp contexts are not
    re-entrant); the predictor's concurrency limit queues the rest. `stop_on_loop`: end a generation once its text
    is a repetition loop (the gate's rule, watched token by token), with finish_reason "stop", stop_reason LOOP."""

    def __init__(self, model_path: Path, *, context_tokens: int = 4096, threads: int | None = None,
                 penalties: dict[str, float] | None = None, stop_on_loop: bool = True) -> None:
        self.model_path, self.context_tokens, self.threads = Path(model_path), context_tokens, threads
        self.penalties = dict(penalties or {})  # repeat/frequency/presence_penalty, passed to every generation
        self.stop_on_loop = stop_on_loop
        self.name = self.model_path.stem
        self.concurrency = 1
        self._llama = None
        self._template = None
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
        self._template = self._chat_template()

    def _chat_template(self):
        """The GGUF's own chat template, as llama-cpp-python builds it, to count prompt tokens the way it renders."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        special = {}
        for role, token in (("eos_token", self._llama.token_eos()), ("bos_token", self._llama.token_bos())):
            special[role] = self._llama.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""
        return Jinja2ChatFormatter(template=template, **special)

    def stream(self, request: GenerationRequest) -> Iterator[Piece]:
        if self._llama is None:
            raise ConfigError("the llama.cpp engine is not loaded", hint="call load() first")
        with self._lock:
            options = {"max_tokens": request.max_tokens, "temperature": request.temperature,
                       "stop": list(request.stop) or None, "stream": True, **self.penalties}
            chunks = (self._llama.create_completion(request.prompt, **options) if request.prompt is not None
                      else self._llama.create_chat_completion(messages=request.messages, **options))
            parts: list[str] = []
            watch = _loop_watch() if self.stop_on_loop else None
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    text = (choice["text"] if "text" in choice else choice.get("delta", {}).get("content")) or ""
                    parts.append(text)
                    if finish := choice.get("finish_reason"):
                        yield Piece(text, finish, self._usage(request, "".join(parts), finish))
                    elif watch is not None and text and watch.add(text):
                        # the text so far loops (the loop's own tokens included, so whoever reads it sees why):
                        # stop here; closing `chunks` below ends llama.cpp's generation
                        yield Piece(text, "stop", self._usage(request, "".join(parts), "stop"), LOOP)
                        return
                    elif text:
                        yield Piece(text)
            except ValueError as exc:  # llama.cpp's "Requested tokens (N) exceed context window of M"
                raise BadEvent(f"the prompt does not fit the model: {exc}",
                               hint="shorten it, or raise RAGFN_LLM_CONTEXT_TOKENS") from exc
            finally:
                chunks.close()  # a closed client stops the generation here, releasing the model

    def _usage(self, request: GenerationRequest, text: str, finish: str) -> dict:
        """Token counts after the fact (llama-cpp-python streams none), off the time-to-first-token path: the prompt
        as the GGUF's chat template renders it; the completion as max_tokens when cut there, else its text's tokens."""
        llama = self._llama
        if request.prompt is not None:
            prompt = request.prompt
        elif self._template is not None:
            prompt = self._template(messages=request.messages).prompt
        else:
            prompt = "\n".join(str(m.get("content") or "") for m in request.messages)
        completion = request.max_tokens if finish == "length" else len(llama.tokenize(text.encode(), add_bos=False))
        return {"prompt_tokens": len(llama.tokenize(prompt.encode(), add_bos=True, special=True)),
                "completion_tokens": completion}


def _loop_watch():
    """The gateway gate's loop watch (`ragfn.gateway.gate.LoopWatch`): one rule for a loop, wherever it is caught.
    Imported here, not at the top, so that the other engines do not load the gate's dependencies."""
    from ragfn.gateway.gate import LoopWatch

    return LoopWatch()
