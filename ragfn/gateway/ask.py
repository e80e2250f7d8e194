"""The ask gateway's logic: cache, then retrieve, then generate; it degrades instead of failing.

    vector store down     -> lexical results only           degraded: "vector-store-unavailable"
    retrieve service down -> no passages, no LLM call        degraded: "retrieve-unavailable"
    LLM cold or loading   -> the extractive engine           degraded: "cold-start" (a warm-up runs meanwhile)
    LLM down (a call failed, or warm-ups gave up) -> the extractive engine   degraded: "llm-unavailable"
    LLM refuses the request (4xx: prompt too long, bad key) -> the extractive engine   degraded: "llm-rejected"
      (each of the three LLM cases tries the second provider first, when one is set: `ragfn.gateway.providers`)
    the model's answer fails the groundedness gate -> the extractive engine   degraded: "ungrounded-answer"
      (`ragfn.gateway.gate`; a stream is corrected by a `replace` event)
    Redis or cache-check down -> no cache ("cache": "off")   degraded: "cache-unavailable"
Retrieval and the cache run in this process or as remote functions (`ragfn.gateway.backends`,
`ragfn.gateway.remote`); each, and each model, sits behind a circuit breaker, so a dead one costs one fast failure,
not a timeout per request.

One trace per question (remote spans in brackets, each under the HTTP CLIENT span of its call; `ragfn.ask`
carries the rag.* attributes and ends last, after the final server-sent event when streaming):
    ragfn.ask ─┬─ ragfn.ask.cache_lookup ── POST ── [ragfn.cache-check]
               ├─ ragfn.ask.retrieve ────── POST ── [ragfn.retrieve]
               ├─ ragfn.ask.llm ─────────── POST ── [predictor]
               └─ ragfn.ask.cache_store ─── POST ── [ragfn.cache-check]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from opentelemetry import context as otel_context
from opentelemetry import trace

from ragfn.core.errors import ConfigError, RagfnError, Unavailable
from ragfn.core.telemetry import iterate_in_span, tracer
from ragfn.gateway.answer import AskRequest, Prepared, citation_json
from ragfn.gateway.attribution import attribute
from ragfn.gateway.backends import AnswerCache, AnswerKey, Lookup, Retrieval, RetrievalQuery, retrieval_attributes
from ragfn.gateway.feedback import AnsweredQuestion, FeedbackStore
from ragfn.gateway.gate import UNGROUNDED, AnswerGate, LoopWatch
from ragfn.gateway.providers import Generation, Providers, failed
from ragfn.gateway.sampling import AnswerSampler, answer_sample
from ragfn.llm.client import LLM, PROMPT_VERSION, PROMPTS, build_messages, citations
from ragfn.llm.warmup import PredictorWarmth
from ragfn.retrieval.dense import Caller

__all__ = ["NO_RETRIEVAL", "AskRequest", "Gateway", "Prepared"]  # AskRequest and Prepared live in .answer

log = logging.getLogger("ragfn.gateway")
MAX_CHARS_PER_TOKEN = 64  # far above any tokenizer's longest token: more text than this means max_tokens was ignored
NO_RETRIEVAL = ("Document search is unavailable right now, so this question cannot be answered from the documents. "
                "Please try again in a moment.")


class Gateway:
    """`llm` the primary model, `second` the provider tried when it cannot answer, `gate` the check of a model's
    answer before it is final (None: answers are shown as the model wrote them), `sampler` what sends a share of
    answers to the background judge (None: none are)."""

    def __init__(self, llm: LLM, *, retrieval: Retrieval, cache: AnswerCache, second: LLM | None = None,
                 gate: AnswerGate | None = None, warmth: PredictorWarmth | None = None,
                 cold_wait_seconds: float = 1.0, feedback: FeedbackStore | None = None,
                 prompt_version: str = PROMPT_VERSION, sampler: AnswerSampler | None = None) -> None:
        if prompt_version not in PROMPTS:
            raise ConfigError(f"unknown prompt version {prompt_version!r}", hint=f"one of {', '.join(PROMPTS)}")
        self.llm, self.gate, self.feedback, self.prompt_version = llm, gate, feedback, prompt_version
        self.sampler = sampler
        self.providers = Providers(llm, second=second, warmth=warmth, cold_wait_seconds=cold_wait_seconds)
        self.retrieval, self.cache = retrieval, cache
        self.llm_remote = hasattr(llm, "base_url")  # an HTTP client (the predictor), not an in-process engine
        self.breakers = {**self.providers.breakers, self.cache.breaker.name: self.cache.breaker,
                         self.retrieval.breaker.name: self.retrieval.breaker}

    def _timed(self, prepared: Prepared, stage: str, started: float) -> None:
        prepared.timings_ms[stage] = round((time.perf_counter() - started) * 1000, 2)

    @contextmanager
    def _stage(self, name: str, remote: bool, **attributes: object) -> Iterator[trace.Span]:
        # a stage is INTERNAL even when remote: the HTTP call inside it is the CLIENT span (traced_http_client)
        with tracer().start_as_current_span(name, attributes={"rag.remote": remote, **attributes}) as span:
            yield span

    def prepare(self, request: AskRequest, caller: Caller, prepared: Prepared | None = None) -> Prepared:
        prepared = prepared if prepared is not None else Prepared()
        prepared.request, prepared.caller = request, caller
        key = AnswerKey(caller, request.collection, self.providers.expected_model(), self.prompt_version)
        started = time.perf_counter()
        with self._stage("ragfn.ask.cache_lookup", self.cache.remote) as span:
            try:
                lookup = self.cache.lookup(request.question, key)
            except RagfnError as exc:  # whatever the cache's trouble, the answer must not depend on it
                failed(span, exc, "cache-unavailable")
                prepared.degraded.append("cache-unavailable")
                lookup = Lookup("off")
            span.set_attribute("rag.cache", lookup.status)
        prepared.cache, prepared.hit = lookup.status, lookup.hit
        if lookup.status == "miss":
            prepared.key, prepared.lookup = key, lookup
        self._timed(prepared, "cache", started)
        if prepared.hit:
            return prepared
        started = time.perf_counter()
        # the cache's embedder is the retriever's in one process, so a miss's vector spares a second embedding
        vector = lookup.vector if not (self.cache.remote or self.retrieval.remote) else None
        query = RetrievalQuery(request.question, caller, request.collection, request.top_k, request.mode,
                               request.budget_tokens, vector)
        with self._stage("ragfn.ask.retrieve", self.retrieval.remote, **{"rag.retrieval.mode": request.mode}) as span:
            try:
                retrieved = self.retrieval.retrieve(query)
            except Unavailable as exc:
                failed(span, exc, "retrieve-unavailable")
                prepared.degraded.append("retrieve-unavailable")
            else:
                prepared.retrieved, prepared.hits, prepared.passages = True, retrieved.hits, retrieved.passages
                prepared.degraded.extend(retrieved.degraded)
                span.set_attributes(self._retrieval_attributes(prepared))
                if retrieved.degraded:
                    span.set_attribute("rag.fallback.reason", "+".join(retrieved.degraded))
        self._timed(prepared, "retrieve", started)
        prepared.messages = build_messages(request.question, prepared.passages, prompt_version=self.prompt_version)
        return prepared

    def ask(self, request: AskRequest, caller: Caller, *, parent: otel_context.Context | None = None,
            prepared: Prepared | None = None) -> dict:
        """The whole answer as one JSON object; `parent` is the caller's trace context (e.g. from traceparent);
        `prepared`, when given, is filled in (an evaluation reads what the gate withheld from it)."""
        with tracer().start_as_current_span("ragfn.ask", context=parent, kind=trace.SpanKind.SERVER,
                                            attributes={"rag.stream": False}) as span:
            prepared = prepared if prepared is not None else Prepared()
            try:
                self.prepare(request, caller, prepared)
                if prepared.hit:
                    return self._result(prepared, prepared.hit.answer["answer"], prepared.hit.answer["citations"])
                if not prepared.retrieved:
                    return self._result(prepared, NO_RETRIEVAL, [])
                started = time.perf_counter()
                with self._stage("ragfn.ask.llm", self.llm_remote, **{"rag.llm.model": self.llm.name}) as llm_span:
                    generation = self._call_llm(llm_span, prepared, "complete", request.max_tokens)
                completion = generation.result
                self._timed(prepared, "generate", started)
                text, truncated = completion.text, completion.finish_reason == "length"
                if len(text) > MAX_CHARS_PER_TOKEN * request.max_tokens:  # a server that ignored max_tokens
                    text, truncated = text[:MAX_CHARS_PER_TOKEN * request.max_tokens], True
                cited = self._cite(prepared, text)
                if (replaced := self._apply_gate(request, prepared, generation, text, cited, truncated)) is not None:
                    text, cited, truncated = replaced
                self._store(request, prepared, text, cited, truncated)
                return self._result(prepared, text, cited)
            finally:
                self._annotate(span, prepared)

    def stream(self, request: AskRequest, caller: Caller, *,
               parent: otel_context.Context | None = None) -> Iterator[tuple[str, object]]:
        """("status", {...})?, ("token", text)*, ("replace", {...})?, ("citations", [...]), ("final", {...}): the
        server-sent events of one answer. A `replace` event means the tokens so far failed the groundedness gate:
        its `text` is the answer to show instead (the extractive answer), and the citations that follow are its.

        Its `ragfn.ask` span stays open until the last event was taken (or the iterator closed)."""
        return iterate_in_span("ragfn.ask", lambda span: self._stream(request, caller, span), parent=parent,
                               kind=trace.SpanKind.SERVER, attributes={"rag.stream": True})

    def _stream(self, request: AskRequest, caller: Caller, span: trace.Span) -> Iterator[tuple[str, object]]:
        prepared = Prepared()
        try:
            self.prepare(request, caller, prepared)
            if prepared.hit:
                yield "token", prepared.hit.answer["answer"]
                yield "citations", prepared.hit.answer["citations"]
                yield "final", self._final(prepared, prepared.hit.answer["answer"])
                return
            if not prepared.retrieved:
                yield "status", {"degraded": "retrieve-unavailable", "message": "document search is unavailable"}
                yield "token", NO_RETRIEVAL
                yield "citations", []
                yield "final", self._final(prepared, NO_RETRIEVAL)
                return
            started = time.perf_counter()
            yield from self._generate(request, prepared, started)
        finally:
            self._annotate(span, prepared)

    def _generate(self, request: AskRequest, prepared: Prepared, started: float) -> Iterator[tuple[str, object]]:
        # Not current across yields (see iterate_in_span): made current only while the request goes out.
        llm_span = tracer().start_span("ragfn.ask.llm",
                                       attributes={"rag.remote": self.llm_remote, "rag.llm.model": self.llm.name})
        stopped = False
        try:
            with trace.use_span(llm_span):
                generation = self._call_llm(llm_span, prepared, "stream", request.max_tokens)
            deltas = generation.result
            if generation.status:
                yield "status", generation.status
            # a model's stream is watched for loops, so a loop ends generation at once instead of at max_tokens
            watch = LoopWatch() if self.gate is not None and generation.provider != "extractive" else None
            parts = []
            try:
                for delta in deltas:
                    parts.append(delta)
                    yield "token", delta
                    if watch is not None and watch.add(delta):
                        stopped = True
                        llm_span.set_attribute("rag.llm.stopped", "repetition")
                        break
                    if len(parts) > request.max_tokens:  # each delta holds a token or more: a server ignoring
                        stopped = True  # max_tokens is cut off here, and its answer counts as cut off
                        llm_span.set_attribute("rag.llm.stopped", "max-tokens-ignored")
                        break
            except Unavailable:
                self.providers.stream_failed(generation.provider)
                raise
            finally:
                getattr(deltas, "close", lambda: None)()  # a client that went away cancels the upstream stream
        except Exception as exc:
            llm_span.record_exception(exc)
            llm_span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
            raise
        finally:
            llm_span.end()
        self._timed(prepared, "generate", started)
        text = "".join(parts)
        truncated = stopped or getattr(deltas, "finish_reason", "stop") == "length"
        cited = self._cite(prepared, text)
        if (replaced := self._apply_gate(request, prepared, generation, text, cited, truncated)) is not None:
            text, cited, truncated = replaced
            yield "replace", {"text": text, "degraded": UNGROUNDED, "reason": prepared.gate.reason,
                              "message": prepared.gate.message}
        yield "citations", cited
        self._store(request, prepared, text, cited, truncated)
        yield "final", self._final(prepared, text)

    def _call_llm(self, span: trace.Span, prepared: Prepared, method: str, max_tokens: int) -> Generation:
        generation = self.providers.call(span, prepared.messages, method, max_tokens)
        prepared.model, prepared.provider = generation.model, generation.provider
        if generation.status:
            prepared.degraded.append(generation.status["degraded"])
        return generation

    def _apply_gate(self, request: AskRequest, prepared: Prepared, generation: Generation, text: str, cited: list[dict],
               truncated: bool) -> tuple[str, list[dict], bool] | None:
        """The gate's verdict on a model's answer; when it fails, the extractive answer (within the same max_tokens),
        its citations and whether it was cut off."""
        if self.gate is None or generation.provider == "extractive":
            return None  # the extractive engine copies the passages: there is nothing to check
        started = time.perf_counter()
        with self._stage("ragfn.ask.gate", False) as span:
            verdict = self.gate.check(text, {int(c["n"]): c["text"] for c in cited}, truncated=truncated)
            prepared.gate = verdict
            span.set_attributes({"rag.gate.passed": verdict.passed, "rag.gate.reason": verdict.reason or ""})
            if verdict.passed:
                self._timed(prepared, "gate", started)
                return None
            span.set_attribute("rag.fallback.reason", UNGROUNDED)
            prepared.withheld = {"answer": text, "citations": cited, "truncated": truncated}
            prepared.degraded.append(UNGROUNDED)
            prepared.model, prepared.provider = self.providers.extractive.name, "extractive"
            replacement = self.providers.extractive.complete(prepared.messages, max_tokens=request.max_tokens)
            prepared.inferred = False
            cited = self._cite(prepared, replacement.text)
        self._timed(prepared, "gate", started)
        return replacement.text, cited, replacement.finish_reason == "length"

    @staticmethod
    def _cite(prepared: Prepared, text: str) -> list[dict]:
        """The passages the answer cites as [n]; when it cites none, those its sentences draw on (attribution)."""
        cited = citations(text, prepared.passages)
        if not cited and prepared.passages:
            cited = attribute(text, prepared.passages)
            prepared.inferred = bool(cited)
        return [citation_json(p) for p in cited]

    def _store(self, request: AskRequest, prepared: Prepared, text: str, cited: list[dict], partial: bool) -> None:
        prepared.cited, prepared.truncated = len(cited), partial
        if prepared.lookup is None or prepared.key is None or prepared.degraded or partial or not cited:
            return  # only complete, cited, non-degraded answers are worth repeating
        started = time.perf_counter()
        answer = {"answer": text, "citations": cited, "citations_inferred": prepared.inferred, "model": prepared.model}
        # cached under the model that wrote it, so the fallback's answers are never served as the primary's
        key = replace(prepared.key, model=self.providers.cache_names.get(prepared.provider, prepared.key.model))
        documents = sorted({c["source"] for c in cited})
        with self._stage("ragfn.ask.cache_store", self.cache.remote) as span:
            try:
                span.set_attribute("rag.cache.stored", self.cache.store(request.question, key, answer,
                                                                        documents, prepared.lookup))
            except RagfnError as exc:
                failed(span, exc, "cache-unavailable")
                prepared.degraded.append("cache-unavailable")
        self._timed(prepared, "cache_store", started)

    @staticmethod
    def _retrieval_attributes(prepared: Prepared) -> dict:
        return retrieval_attributes(prepared.hits, prepared.passages)

    def _annotate(self, span: trace.Span, prepared: Prepared) -> None:
        """The RAG attributes of the whole answer, on the `ragfn.ask` span, however the request ended."""
        attributes = {"rag.cache": prepared.cache, "rag.degraded": bool(prepared.degraded),
                      "rag.citations": prepared.cited, **self._retrieval_attributes(prepared),
                      **{f"rag.timing.{stage}_ms": ms for stage, ms in prepared.timings_ms.items()}}
        if prepared.hit:
            attributes |= {"rag.cache.tier": prepared.hit.tier, "rag.citations": len(prepared.hit.answer["citations"])}
        if prepared.degraded:
            attributes["rag.fallback.reason"] = "+".join(prepared.degraded)
        span.set_attributes(attributes)

    def _final(self, prepared: Prepared, text: str) -> dict:
        """The closing record of an answer; the answer is remembered under its id so it can be rated."""
        if prepared.hit:
            prepared.inferred = bool(prepared.hit.answer.get("citations_inferred"))
            prepared.model = prepared.hit.answer.get("model")
        final = {"answer_id": prepared.answer_id, "cache": prepared.cache,
                 "degraded": "+".join(prepared.degraded) or None,
                 "citations_inferred": prepared.inferred, "truncated": prepared.truncated, "model": prepared.model,
                 "provider": prepared.provider, "gate": prepared.gate.to_json() if prepared.gate else None,
                 "timings_ms": prepared.timings_ms}
        if self.feedback is not None and prepared.request is not None:
            try:
                hit = prepared.hit
                self.feedback.remember(AnsweredQuestion(
                    prepared.answer_id, prepared.caller.tenant or "", prepared.request.collection,
                    prepared.request.question, text, prepared.cache, final["degraded"],
                    prepared.model or self.llm.name, self.prompt_version, hit.question if hit else None,
                    round(hit.similarity, 4) if hit else None))
            except RagfnError as exc:  # rating is a nicety; the answer stands without it
                log.warning("answer %s not remembered for feedback: %s", prepared.answer_id, exc)
                final["answer_id"] = None
        if self.sampler is not None and prepared.provider and not prepared.hit:  # a hit was sampled when written
            self.sampler.offer(lambda: answer_sample(
                prepared.answer_id, prepared.request.question, text, prepared.passages, model=prepared.model,
                provider=prepared.provider, collection=prepared.request.collection,
                prompt_version=self.prompt_version, degraded=final["degraded"]))
        return final

    def _result(self, prepared: Prepared, text: str, cited: list[dict]) -> dict:
        return {"answer": text, "citations": cited, **self._final(prepared, text)}
