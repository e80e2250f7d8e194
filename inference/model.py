"""The KServe predictor: a `kserve.Model` around one engine, with background loading, a queue and metrics.

`load()` starts the engine loading in a thread and returns at once, so the server listens (and answers
`/v1/warmup` and readiness with "loading") while a large model loads; `healthy()` is true only once it has loaded,
which is what KServe's `/v1/models/{name}` and `/v2/models/{name}/ready` report. Requests that arrive while loading
wait (as queued requests) instead of failing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import kserve
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from inference.admission import Admission, Overloaded
from inference.engines import GenerationRequest, Piece
from inference.metrics import PredictorMetrics
from inference.threads import iterate_in_thread
from ragfn.core.errors import BadEvent, RagfnError, Unavailable

log = logging.getLogger("ragfn.inference")


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    stop_reason: str | None = None  # why a "stop" came early ("repetition": the llama.cpp engine's loop stop)


class EngineFailed(Unavailable):
    """The engine could not load: every request says why until the process is restarted with better settings."""


class RagfnModel(kserve.Model):
    def __init__(self, name: str, engine, *, concurrency: int | None = None, max_queue: int = 64,
                 queue_timeout: float = 120.0, metrics: PredictorMetrics | None = None) -> None:
        super().__init__(name)
        self.engine = engine
        self.metrics = metrics or PredictorMetrics(name)
        self.admission = Admission(concurrency or engine.concurrency, max_queue, queue_timeout, self.metrics)
        # as many generation threads as slots, kept for the process's life (see inference/threads.py)
        self.generators = ThreadPoolExecutor(self.admission.limit, thread_name_prefix="ragfn-generate")
        self.queue_timeout = queue_timeout
        self.load_seconds: float | None = None
        self.load_error: RagfnError | None = None
        self.warmed = False
        self._loaded = threading.Event()
        self._load_started = False
        self._load_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def load(self) -> bool:
        """Start loading in the background (once); `ready` only registers the model, `healthy()` says it loaded."""
        with self._load_lock:
            if not self._load_started:
                self._load_started = True
                threading.Thread(target=self._load_engine, name="ragfn-load", daemon=True).start()
        self.ready = True
        return self.ready

    def _load_engine(self) -> None:
        started = time.perf_counter()
        try:
            self.engine.load()
        except Exception as exc:  # noqa: BLE001 - reported on every request and in the log, never swallowed
            message = exc.message if isinstance(exc, RagfnError) else f"{type(exc).__name__}: {exc}"
            self.load_error = EngineFailed(f"engine {self.engine.name!r} failed to load: {message}",
                                           hint=getattr(exc, "hint", None) or "fix the RAGFN_LLM_* settings and restart")
            log.error("%s", self.load_error)
        else:
            self.load_seconds = time.perf_counter() - started
            self.metrics.load_seconds.set(self.load_seconds)
            self.metrics.ready.set(1)
            log.info("engine %s loaded in %.2fs", self.engine.name, self.load_seconds)
        finally:
            self._loaded.set()

    @property
    def state(self) -> str:
        if self.load_error:
            return "failed"
        if self._loaded.is_set():
            return "ready"
        return "loading" if self._load_started else "cold"

    async def healthy(self) -> bool:
        return self.state == "ready"

    async def wait_loaded(self, timeout: float) -> None:
        if not self._loaded.is_set():  # the per-request path once loaded: no lock, no thread
            self.load()
            if not await asyncio.to_thread(self._loaded.wait, timeout):
                raise Overloaded(f"the model is still loading after {timeout:g}s", retry_after=5)
        if self.load_error:
            raise self.load_error

    async def warmup(self, timeout: float = 0.0) -> dict:
        """Start loading; wait up to `timeout` for it; once loaded, run one token so the first answer is warm."""
        try:
            await self.wait_loaded(timeout)
        except Unavailable:  # still loading, or failed: the state below says which
            pass
        if self.state == "ready" and not self.warmed:
            async for _ in self.generate(GenerationRequest([{"role": "user", "content": "hi"}], max_tokens=1)):
                pass
            self.warmed = True
        return {"model": self.name, "state": self.state, "ready": self.state == "ready",
                "load_seconds": self.load_seconds, **({"error": str(self.load_error)} if self.load_error else {})}

    # -- generation ----------------------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncIterator[Piece]:
        """Pieces of one generation; waits for loading and for a slot; closing it cancels the generation."""
        arrived = time.perf_counter()
        outcome, first, produced = "error", None, 0
        try:
            async with self.admission.slot():
                await self.wait_loaded(self.queue_timeout)
                stream = (self.engine.astream(request) if hasattr(self.engine, "astream")
                          else iterate_in_thread(lambda: self.engine.stream(request), self.generators))
                try:
                    outcome = "cancelled"
                    async for piece in stream:
                        if first is None and piece.text:
                            first = time.perf_counter()
                            self.metrics.time_to_first_token.observe(first - arrived)
                        if piece.finish_reason:
                            outcome = piece.finish_reason
                            produced = piece.usage.get("completion_tokens", 0)
                        yield piece
                finally:
                    await stream.aclose()
        except Overloaded:
            outcome = "overloaded"
            raise
        finally:
            self.metrics.finished(outcome)
            if produced:
                self.metrics.completion_tokens.inc(produced)
                elapsed = time.perf_counter() - (first or arrived)
                if produced > 1 and elapsed > 0:
                    self.metrics.tokens_per_second.observe((produced - 1) / elapsed)

    async def complete(self, request: GenerationRequest) -> Completion:
        parts, last = [], Piece("")
        async for piece in self.generate(request):
            parts.append(piece.text)
            last = piece
        return Completion("".join(parts), last.finish_reason or "stop", last.usage.get("prompt_tokens", 0),
                          last.usage.get("completion_tokens", 0), last.stop_reason)

    # -- KServe v1 / v2 --------------------------------------------------------------------------------------------
    async def predict(self, payload, headers: dict | None = None):
        if isinstance(payload, InferRequest):
            return await self._predict_v2(payload)
        if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
            raise BadEvent('a v1 request is {"instances": [...]}',
                           hint='each instance a question string, {"messages": [...]} or {"prompt": "..."}')
        results = await asyncio.gather(*(self.complete(v1_request(i)) for i in payload["instances"]))
        return {"predictions": [{"text": r.text, "finish_reason": r.finish_reason,
                                 "usage": {"prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens}}
                                | ({"stop_reason": r.stop_reason} if r.stop_reason else {}) for r in results]}

    async def _predict_v2(self, request: InferRequest) -> InferResponse:
        inputs = {i.name: i for i in request.inputs}
        if "text_input" not in inputs or inputs["text_input"].datatype != "BYTES":
            raise BadEvent("a v2 request needs a BYTES input named text_input",
                           hint='{"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", '
                                '"data": ["question"]}]}')
        options = generation_options(request.parameters or {})
        texts = [t.decode() if isinstance(t, bytes) else str(t) for t in _flatten(inputs["text_input"].data)]
        results = await asyncio.gather(*(self.complete(GenerationRequest([{"role": "user", "content": t}], **options))
                                         for t in texts))
        output = InferOutput("text_output", [len(results)], "BYTES", [r.text for r in results])
        return InferResponse(request.id or uuid.uuid4().hex, self.name, [output])


def _flatten(data) -> list:
    return [x for item in data for x in (_flatten(item) if isinstance(item, list) else [item])]


def generation_options(source: dict) -> dict:
    """max_tokens / temperature / stop from a request body or parameters, validated."""
    options: dict = {}
    try:
        if source.get("max_tokens") is not None:
            options["max_tokens"] = int(source["max_tokens"])
            if not 1 <= options["max_tokens"] <= 32768:
                raise ValueError("max_tokens must be between 1 and 32768")
        if source.get("temperature") is not None:
            options["temperature"] = float(source["temperature"])
            if not 0 <= options["temperature"] <= 2:
                raise ValueError("temperature must be between 0 and 2")
        stop = source.get("stop")
        if stop is not None:
            options["stop"] = (stop,) if isinstance(stop, str) else tuple(str(s) for s in stop)
    except (TypeError, ValueError) as exc:
        raise BadEvent(f"invalid generation options: {exc}") from exc
    return options


def v1_request(instance) -> GenerationRequest:
    if isinstance(instance, str):
        return GenerationRequest([{"role": "user", "content": instance}])
    if isinstance(instance, dict) and isinstance(instance.get("messages"), list) and instance["messages"]:
        return GenerationRequest(instance["messages"], **generation_options(instance))
    if isinstance(instance, dict) and isinstance(instance.get("prompt"), str):
        return GenerationRequest(prompt=instance["prompt"], **generation_options(instance))
    raise BadEvent(f"cannot read instance {str(instance)[:100]!r}",
                   hint='use a question string, {"messages": [...]} or {"prompt": "..."}')
