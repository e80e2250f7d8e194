"""The vLLM engine (CUDA GPU): the only module of ragfn that imports vllm, and only inside `load()`.

Written against vLLM 0.24.0, the version KServe 0.21's `llm` extra pins (kserve-0.21.0 METADATA:
`Requires-Dist: vllm==0.24.0; extra == "llm"`). vllm cannot be installed here (no GPU), so the API below was read,
not run; sources are vllm-project/vllm's source and the versioned pages on docs.vllm.ai:
- `vllm.AsyncEngineArgs`, `vllm.AsyncLLMEngine`, `vllm.SamplingParams` and `vllm.__version__`: vllm/__init__.py
  (lazy `MODULE_ATTRS`). `AsyncLLMEngine` is an alias, `AsyncLLMEngine = AsyncLLM` (vllm/engine/async_llm_engine.py,
  docs v0.16.0 `vllm` page); V1 `vllm.v1.engine.async_llm.AsyncLLM` is the only engine left.
- `AsyncLLM.from_engine_args(engine_args)` (classmethod); `AsyncEngineArgs(model=..., **kwargs)` is a dataclass.
- `async def generate(prompt, sampling_params, request_id, *, tokenization_kwargs=None, ...)` is an async generator of
  `RequestOutput`: `.finished`, `.prompt_token_ids` (on every output), `.outputs[0].text` / `.token_ids` /
  `.finish_reason` ("stop" | "length" | "abort" | ...). It aborts on GeneratorExit/CancelledError itself, but only
  once closed: breaking out of `async for` does not close it, hence the explicit `aclose()` below.
- `vllm.sampling_params.RequestOutputKind.DELTA` (CUMULATIVE=0, DELTA=1, FINAL_ONLY=2): each output carries only
  new text and token ids. `SamplingParams(max_tokens=, temperature=, stop=, output_kind=)`; temperature below 1e-5
  means greedy (`_SAMPLING_EPS`).
- `async def abort(request_id, internal=False)`: takes the caller's request id (vLLM suffixes it internally).
- `def get_tokenizer()` is sync in the renderer-era source (`return self.renderer.get_tokenizer()`; the renderers are
  sync from the v0.15 docs on); it was `async` up to v0.14 (`EngineClient`). A HF tokenizer's
  `apply_chat_template(messages, tokenize=False, add_generation_prompt=True)` returns the prompt text.
- `def shutdown(timeout=None)` is sync.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator

from inference.engines import GenerationRequest, Piece
from ragfn.core.errors import ConfigError

log = logging.getLogger(__name__)

VLLM_VERSION = "0.24.0"


async def _settle(value):
    # Tolerates a vLLM that drifted from the pin (load() only warns): get_tokenizer was async up to v0.14.
    return await value if inspect.isawaitable(value) else value


class VLLMEngine:
    """vLLM's AsyncLLM on a GPU: continuous batching, so `concurrency` generations run at once."""

    def __init__(self, model: str, *, concurrency: int = 64, engine_args: dict | None = None) -> None:
        self.model, self.concurrency, self.engine_args = model, concurrency, dict(engine_args or {})
        self.name = model.rstrip("/").rsplit("/", 1)[-1]
        self._engine = None
        self._sampling_params = self._delta = None

    def load(self) -> None:
        if self._engine is not None:
            return
        try:
            import vllm
            from vllm import AsyncEngineArgs, AsyncLLMEngine, SamplingParams
            from vllm.sampling_params import RequestOutputKind
        except ImportError as exc:
            raise ConfigError(f"the vllm engine needs vllm {VLLM_VERSION}, which is not installed here ({exc})",
                              hint=f"pip install vllm=={VLLM_VERSION} on a CUDA GPU machine, "
                                   "or set RAGFN_LLM_ENGINE=llamacpp") from exc
        version = str(getattr(vllm, "__version__", "unknown"))
        if version.split("+", 1)[0] != VLLM_VERSION:  # "0.24.0+cu129" local builds are the pin too
            log.warning("vllm %s is installed; this engine was written against vllm %s", version, VLLM_VERSION)
        self._sampling_params, self._delta = SamplingParams, RequestOutputKind.DELTA
        self._engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(model=self.model, **self.engine_args))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()  # stops the engine-core process and frees the GPU
            self._engine = None

    async def astream(self, request: GenerationRequest) -> AsyncIterator[Piece]:
        engine = self._engine
        if engine is None:
            raise ConfigError("the vllm engine is not loaded", hint="call load() first")
        if request.prompt is not None:
            prompt, options = request.prompt, {}
        else:
            tokenizer = await _settle(engine.get_tokenizer())
            prompt = tokenizer.apply_chat_template(list(request.messages), tokenize=False, add_generation_prompt=True)
            # The template already wrote BOS & co; vLLM's own chat endpoint tokenizes with add_special_tokens=False too.
            options = {"tokenization_kwargs": {"add_special_tokens": False}}
        params = self._sampling_params(max_tokens=request.max_tokens, temperature=request.temperature,
                                       stop=list(request.stop) or None, output_kind=self._delta)
        outputs = engine.generate(prompt, params, request.request_id, **options)
        finished, prompt_tokens, produced = False, 0, 0
        try:
            async for output in outputs:
                completion = output.outputs[0]
                produced += len(completion.token_ids)  # DELTA: only this step's tokens (merged if we fell behind)
                prompt_tokens = len(output.prompt_token_ids or ()) or prompt_tokens
                if output.finished:
                    finished = True
                    reason = "length" if completion.finish_reason == "length" else "stop"
                    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": produced}
                    yield Piece(completion.text, reason, usage)
                elif completion.text:
                    yield Piece(completion.text)
        finally:
            # A closed or cancelled consumer (client disconnect) or an error: free the sequence's GPU slot now.
            await outputs.aclose()
            if not finished:
                try:
                    await _settle(engine.abort(request.request_id))
                except Exception:  # never mask the reason we are unwinding
                    log.warning("vllm could not abort request %s", request.request_id, exc_info=True)
