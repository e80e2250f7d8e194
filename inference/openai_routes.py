"""OpenAI-compatible routes on KServe's FastAPI app: chat and text completions (JSON or SSE), models, warm-up.

KServe 0.21 serves its own OpenAI routes only when vllm imports (its request types are vllm's), so these are the
predictor's own: a subset of OpenAI's protocol, enough for the official `openai` client, LangChain and ragfn's gateway.
Errors use OpenAI's shape, `{"error": {"message", "type", "code"}}`, with the status of ragfn's error tree.
A choice that stopped early for a reason of the engine's own carries vLLM's extension `stop_reason` (here
"repetition": the llama.cpp engine's loop stop) beside `finish_reason` "stop"; OpenAI clients keep unknown fields.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Literal

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.admission import Overloaded
from inference.engines import GenerationRequest
from inference.model import RagfnModel, generation_options
from ragfn.core.errors import BadEvent, RagfnError, problems

DEFAULT_MAX_TOKENS = 512


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict] | None = None


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")  # seed, user, top_p, ...: accepted and not used, as vLLM does for some

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=32768)
    temperature: float | None = Field(None, ge=0, le=2)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)


class CompletionRequest(_Sampling):
    prompt: str | list[str]


def _error(exc: RagfnError) -> JSONResponse:
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Overloaded) else None
    return JSONResponse({"error": {"message": str(exc), "type": kind, "code": type(exc).__name__}},
                        status_code=exc.status, headers=headers)


async def _parse(request: Request, schema: type[BaseModel]):
    try:
        return schema.model_validate(orjson.loads(await request.body()))
    except orjson.JSONDecodeError as exc:
        raise BadEvent(f"request body is not JSON: {exc}") from exc
    except ValidationError as exc:
        raise BadEvent(f"invalid request: {problems(exc)}") from exc


def _sse(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _usage(piece_usage: dict) -> dict:
    prompt, completion = piece_usage.get("prompt_tokens", 0), piece_usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class OpenAIRoutes:
    """The routes of one model; `install(app)` mounts them ahead of KServe's, so `/v1/models` is OpenAI's list."""

    def __init__(self, model: RagfnModel) -> None:
        self.model = model
        self.router = APIRouter()
        self.router.add_api_route("/v1/chat/completions", self.chat, methods=["POST"])
        self.router.add_api_route("/v1/completions", self.completions, methods=["POST"])
        self.router.add_api_route("/v1/models", self.models, methods=["GET"])
        self.router.add_api_route("/v1/warmup", self.warmup, methods=["GET", "POST"])

    def install(self, app: FastAPI) -> None:
        app.add_exception_handler(RagfnError, lambda _request, exc: _error(exc))
        app.include_router(self.router)
        # FastAPI matches routes in order: move ours ahead of KServe's `GET /v1/models` (its v1 model list)
        ours = app.router.routes[-len(self.router.routes):]
        del app.router.routes[-len(self.router.routes):]
        app.router.routes[:0] = ours

    async def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.model.name, "object": "model", "created": 0,
                                            "owned_by": "ragfn", "ready": self.model.state == "ready"}]}

    async def warmup(self, wait: float = 0.0) -> JSONResponse:
        """Load the model if cold; wait up to `wait` seconds; 200 when ready, 503 + Retry-After while loading."""
        if not 0 <= wait <= 600:
            raise BadEvent(f"wait={wait} is out of range", hint="0 to 600 seconds")
        state = await self.model.warmup(wait)
        if state["ready"]:
            return JSONResponse(state)
        return JSONResponse(state, status_code=503, headers={"Retry-After": "5"} if state["state"] != "failed" else None)

    async def chat(self, request: Request) -> Response:
        body: ChatRequest = await _parse(request, ChatRequest)
        messages = [m.model_dump(exclude_none=True) for m in body.messages]
        max_tokens = body.max_completion_tokens or body.max_tokens or DEFAULT_MAX_TOKENS
        generation = GenerationRequest(messages, **self._options(body, max_tokens))
        return await self._respond(request, body, generation, chat=True)

    async def completions(self, request: Request) -> Response:
        body: CompletionRequest = await _parse(request, CompletionRequest)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise BadEvent(f"prompt is a list of {len(prompts)}; one prompt per request", hint="send one string")
        generation = GenerationRequest(prompt=prompts[0], **self._options(body, body.max_tokens or DEFAULT_MAX_TOKENS))
        return await self._respond(request, body, generation, chat=False)

    def _options(self, body: _Sampling, max_tokens: int) -> dict:
        self._check_model(body.model)
        return generation_options({"max_tokens": max_tokens, "temperature": body.temperature, "stop": body.stop})

    def _check_model(self, name: str | None) -> None:
        if name not in (None, "", self.model.name):
            raise _NotFound(f"model {name!r} is not served here", hint=f"this predictor serves {self.model.name!r}")

    async def _respond(self, request: Request, body: _Sampling, generation: GenerationRequest, *, chat: bool) -> Response:
        ident = f"{'chatcmpl' if chat else 'cmpl'}-{generation.request_id}"
        meta = {"id": ident, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
                "model": self.model.name}
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            pieces = self.model.generate(generation)
            try:  # errors before the first token (overloaded, failed load) keep their HTTP status
                first = [await anext(pieces)]
            except StopAsyncIteration:
                first = []
            except BaseException:
                await pieces.aclose()
                raise
            events = self._events(_prepend(first, pieces), meta, chat, include_usage)
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        completion = await _unless_disconnected(request, self.model.complete(generation))
        choice = {"index": 0, "finish_reason": completion.finish_reason}
        choice |= ({"message": {"role": "assistant", "content": completion.text}} if chat
                   else {"text": completion.text, "logprobs": None})
        if completion.stop_reason:
            choice["stop_reason"] = completion.stop_reason
        usage = _usage({"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens})
        return Response(orjson.dumps(meta | {"choices": [choice], "usage": usage}), media_type="application/json")

    async def _events(self, pieces: AsyncIterator, meta: dict, chat: bool, include_usage: bool) -> AsyncIterator[bytes]:
        meta = meta | {"object": "chat.completion.chunk" if chat else "text_completion"}
        if chat:
            yield _sse(meta | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                            "finish_reason": None}]})
        usage = None
        try:
            async for piece in pieces:
                if not piece.text and not piece.finish_reason:
                    continue
                choice = {"index": 0, "finish_reason": piece.finish_reason}
                choice |= {"delta": {"content": piece.text}} if chat else {"text": piece.text, "logprobs": None}
                chunk = meta | {"choices": [choice]}
                if piece.stop_reason:
                    choice["stop_reason"] = piece.stop_reason
                if piece.finish_reason:
                    usage = _usage(piece.usage)
                    chunk["usage"] = usage  # on the last chunk always; clients that ignore it lose nothing
                yield _sse(chunk)
        except RagfnError as exc:  # after the 200 is sent, an error can only travel as an event
            yield _sse({"error": {"message": str(exc), "type": "server_error", "code": type(exc).__name__}})
            return
        finally:
            await pieces.aclose()  # a client that went away lands here: the engine stops generating
        if include_usage and usage:
            yield _sse(meta | {"choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"


class _NotFound(BadEvent):
    status = 404


async def _prepend(first: list, rest: AsyncIterator) -> AsyncIterator:
    try:
        for item in first:
            yield item
        async for item in rest:
            yield item
    finally:
        await rest.aclose()


async def _unless_disconnected(request: Request, work):
    """Run `work`, cancelling it if the client hangs up first: an abandoned answer should not hold the model."""
    task = asyncio.ensure_future(work)
    while not task.done():
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if not done and await request.is_disconnected():
            task.cancel()
            raise BadEvent("the client disconnected")
    return task.result()
