"""A minimal OpenAI-compatible server around the extractive engine, and models that misbehave the way real upstreams
do: a 500, a 429, a slow one, garbled or unfinished streams, one that streams forever, one that ignores max_tokens.
A test peer for failure modes the real predictor cannot produce on demand, named as such where it is used.

"word-judge" stands in for a capable judge model, which cannot run here (SmolLM2, the only model that can, rarely
returns a verdict): it reads the case the judge sends (ragfn.llm.judge's JSON) and scores it by words, groundedness
with ragfn's offline measure and relevance by the question's content words found in the answer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from ragfn.llm.client import ExtractiveLLM

API_KEY = "sk-local-test"


class ChatServer:
    """Serves `ExtractiveLLM` as model "extractive", and models that misbehave the way real upstreams do."""

    MODELS = ("extractive", "fails-500", "busy-429", "slow", "garbled", "truncated", "endless", "verbose",
              "word-judge")

    def __init__(self) -> None:
        self.engine = ExtractiveLLM()
        self.client_left = threading.Event()  # set when a stream's writer finds the client gone
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"

    @staticmethod
    def error(status: int, message: str, **headers: str) -> Response:
        body = {"error": {"message": message, "type": "invalid_request_error" if status < 500 else "server_error"}}
        return Response(json.dumps(body), status, headers=headers, mimetype="application/json")

    @Request.application
    def app(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return self.error(401, "invalid API key")
        if request.method == "GET" and request.path == "/v1/models":
            data = [{"id": name, "object": "model", "owned_by": "ragfn"} for name in self.MODELS]
            return Response(json.dumps({"object": "list", "data": data}), mimetype="application/json")
        if request.method != "POST" or request.path != "/v1/chat/completions":
            return self.error(404, f"no route {request.method} {request.path}")
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            return self.error(400, "messages must be a non-empty list")
        max_tokens = body.get("max_tokens", 256)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return self.error(400, f"max_tokens must be at least 1, got {max_tokens!r}")
        model = body.get("model")
        if model not in self.MODELS:
            return self.error(404, f"model {model!r} not found")
        if model == "fails-500":
            return self.error(500, "engine crashed")
        if model == "busy-429":
            return self.error(429, "too many requests", **{"Retry-After": "2"})
        if model == "slow":
            time.sleep(2.0)
        args = {"max_tokens": max_tokens, "stop": body.get("stop"), "temperature": body.get("temperature", 0.0)}
        if body.get("stream"):
            return Response(self.sse(model, body["messages"], args), mimetype="text/event-stream")
        done = self.engine.complete(body["messages"], **args)
        if model == "word-judge":
            done = replace(done, text=word_verdict(body["messages"][-1]["content"]), finish_reason="stop")
        if model == "verbose":  # ignores max_tokens: 20,000 words whatever was asked
            done = replace(done, text="more " * 20000, completion_tokens=20000, finish_reason="stop")
        return Response(json.dumps({
            "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": done.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text},
                         "finish_reason": done.finish_reason}],
            "usage": {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                      "total_tokens": done.prompt_tokens + done.completion_tokens}}), mimetype="application/json")

    def sse(self, model: str, messages: list[dict], args: dict) -> Iterator[str]:
        def event(delta: dict, finish: str | None = None) -> str:
            chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "extractive",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(chunk)}\n\n"

        yield ": keep-alive comment, which clients must skip\n\n" + event({"role": "assistant"})
        if model in ("endless", "verbose"):
            try:
                for _ in range(3000):  # ~30 s: long enough that only a client leaving ends it early
                    time.sleep(0.01)
                    yield event({"content": " more"})
            except GeneratorExit:
                self.client_left.set()
                raise
            return
        done = self.engine.complete(messages, **args)
        for delta in self.engine.stream(messages, **args):
            yield event({"content": delta})
        if model == "garbled":
            yield "data: {not json\n\n"
        yield event({}, done.finish_reason)
        if model != "truncated":
            yield "data: [DONE]\n\n"


def word_verdict(case_message: str) -> str:
    """The rubric's JSON verdict on the case in the judge's message, scored by words (1 to 5)."""
    from ragfn.gateway.answer_quality import groundedness
    from ragfn.gateway.attribution import words

    case = json.loads(case_message[case_message.index("{"):case_message.rindex("}") + 1])
    grounded = groundedness(case["answer"], {int(n): text for n, text in case["passages"].items()}) or 0.0
    asked = words(case["question"])
    relevance = len(asked & words(case["answer"])) / len(asked) if asked else 0.0
    return ("Verdict: " + json.dumps({"relevance": 1 + round(4 * relevance), "groundedness": 1 + round(4 * grounded),
                                      "reason": "scored by shared words"}))
