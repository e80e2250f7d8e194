"""The `openai` engine: a proxy to any OpenAI-compatible server (vLLM, llama.cpp's server, a hosted API).

Failures before the first token (connection refused, timeouts, 429, 5xx) are retried with exponential backoff; once
text has been passed on, a retry would repeat it, so a later failure ends the stream with an error instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from inference.engines import GenerationRequest, Piece
from ragfn.core.errors import Unavailable
from ragfn.llm.client import OpenAIChatClient, TextStream

log = logging.getLogger("ragfn.inference")


class UpstreamEngine:
    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, retries: int = 3,
                 timeout: float = 60.0, concurrency: int = 16, backoff: float = 0.5) -> None:
        self.client = OpenAIChatClient(base_url, model, api_key=api_key, read_timeout=timeout)
        self.name, self.retries, self.concurrency, self.backoff = model, retries, concurrency, backoff

    def load(self) -> None:
        # an upstream that is itself scaled to zero is not an error at start-up: the first request waits for it
        if not self.client.warmup(timeout=5.0):
            log.warning("upstream %s did not answer GET /models yet", self.client.base_url)

    def stream(self, request: GenerationRequest) -> Iterator[Piece]:
        deltas = self._open(request)
        produced = 0
        try:
            for delta in deltas:
                produced += 1
                yield Piece(delta)
        finally:
            deltas.close()  # our client went away: drop the upstream connection so it stops generating too
        usage = {"prompt_tokens": deltas.usage.get("prompt_tokens", 0),
                 "completion_tokens": deltas.usage.get("completion_tokens", produced)}
        yield Piece("", deltas.finish_reason or "stop", usage)

    def _open(self, request: GenerationRequest) -> TextStream:
        options = {"max_tokens": request.max_tokens, "stop": list(request.stop) or None,
                   "temperature": request.temperature}
        for attempt in range(self.retries + 1):
            try:
                if request.prompt is not None:
                    return self.client.stream_prompt(request.prompt, **options)
                return self.client.stream(request.messages, **options)
            except Unavailable as exc:  # RateLimited is one too
                if attempt == self.retries:
                    raise
                delay = min(self.backoff * 2 ** attempt, 8.0)
                log.info("upstream attempt %d failed (%s); retrying in %.1fs", attempt + 1, exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")
