"""Retrieval and AnswerCache over HTTP: the retrieve and cache-check functions called as separate services.

Both speak the functions' own JSON (`functions/retrieve`, `functions/cache_check`). Every call goes through one
pooled `httpx.Client` (keep-alive connections; a span per request, `traceparent` carried on: `traced_http_client`),
has its own timeout, and runs inside the implementation's circuit breaker, so a down service degrades the answer
exactly as the in-process failure would. Every call carries a token signed for that service with the caller's tenant
and groups (ragfn.core.service_auth): the services take the caller from it, never from the body.
"""

from __future__ import annotations

import httpx

from ragfn.cache.redis_cache import CacheHit
from ragfn.core.errors import ConfigError, RagfnError, Unavailable, is_retryable_status
from ragfn.core.service_auth import ServiceKeys
from ragfn.gateway.backends import AnswerKey, Lookup, RetrievalQuery, Retrieved, gateway_breaker
from ragfn.gateway.breaker import CircuitBreaker
from ragfn.retrieval.context import Passage
from ragfn.retrieval.dense import Caller, Hit


class UpstreamRejected(RagfnError):
    """A service answered 4xx: it is up (the breaker does not count it) but refused what the gateway sent."""

    status = 502
    retryable = False


class JsonService:
    """POST a JSON body, get a JSON object back; transport faults, timeouts, 404/429/5xx become Unavailable."""

    def __init__(self, name: str, url: str, http: httpx.Client, keys: ServiceKeys, *, timeout_seconds: float) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{name} URL {url!r} is not http(s)", hint=f"e.g. http://ragfn-{name}.default.svc")
        self.name, self.url, self.http, self.keys = name, url, http, keys
        # connect fails fast (nothing listening); the read timeout bounds a slow or cold service
        self.timeout = httpx.Timeout(timeout_seconds, connect=min(2.0, timeout_seconds))

    def post(self, body: dict, caller: Caller) -> dict:
        token = self.keys.sign(self.name, caller.tenant, caller.groups)
        try:
            response = self.http.post(self.url, json=body, timeout=self.timeout,
                                      headers={"Authorization": f"Bearer {token}"})
        except httpx.TimeoutException as exc:
            raise Unavailable(f"{self.name} at {self.url} timed out ({type(exc).__name__})",
                              hint=f"a cold or overloaded {self.name} service") from exc
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach {self.name} at {self.url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            detail = _message(response)
            message = f"{self.name} at {self.url} answered {response.status_code}: {detail}"
            if is_retryable_status(response.status_code):
                raise Unavailable(message)
            raise UpstreamRejected(message, hint="the gateway and the function disagree on the request contract")
        try:
            payload = response.json()
        except ValueError as exc:
            raise Unavailable(f"{self.name} at {self.url} answered with invalid JSON") from exc
        if not isinstance(payload, dict):
            raise Unavailable(f"{self.name} at {self.url} answered {type(payload).__name__}, not an object")
        return payload


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("message", body) if isinstance(body, dict) else body)[:300]
    except ValueError:
        return response.text[:300] or response.reason_phrase


class HttpRetrieval:
    """The retrieve function. Its own vector-store fallback comes back as `degraded`; a down service raises."""

    remote = True

    def __init__(self, url: str, http: httpx.Client, keys: ServiceKeys, *, timeout_seconds: float = 10.0,
                 breaker: CircuitBreaker | None = None) -> None:
        self.service = JsonService("retrieve", url, http, keys, timeout_seconds=timeout_seconds)
        self.breaker = breaker or gateway_breaker("retrieve")

    def retrieve(self, query: RetrievalQuery) -> Retrieved:
        body = {"question": query.question, "collection": query.collection, "top_k": query.top_k,
                "mode": query.mode, "budget_tokens": query.budget_tokens}
        with self.breaker.guard():  # a malformed answer counts as a failure too
            payload = self.service.post(body, query.caller)
            try:
                hits = [Hit(h["chunk_id"], h["source"], h["text"], float(h["score"])) for h in payload["hits"]]
                passages = [Passage(**p) for p in payload["passages"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise Unavailable(f"malformed answer from retrieve at {self.service.url}: {exc}") from exc
        degraded = payload.get("degraded")
        return Retrieved(hits, passages, degraded.split("+") if isinstance(degraded, str) and degraded else [])


class HttpAnswerCache:
    """The cache-check function (`op: lookup | store`). It embeds on its side, so the gateway needs no model."""

    remote = True

    def __init__(self, url: str, http: httpx.Client, keys: ServiceKeys, *, timeout_seconds: float = 2.0,
                 breaker: CircuitBreaker | None = None) -> None:
        self.service = JsonService("cache-check", url, http, keys, timeout_seconds=timeout_seconds)
        self.breaker = breaker or gateway_breaker("cache-check")

    @staticmethod
    def _scope(key: AnswerKey) -> dict:
        return {"collection": key.collection, "model": key.model, "prompt_version": key.prompt_version}

    def lookup(self, question: str, key: AnswerKey) -> Lookup:
        with self.breaker.guard():
            payload = self.service.post({"op": "lookup", "question": question, **self._scope(key)}, key.caller)
            status = payload.get("cache")
            if status == "hit":
                try:
                    hit = CacheHit(payload["answer"], str(payload["question"]), str(payload["tier"]),
                                   float(payload["similarity"]))
                    if not isinstance(hit.answer.get("answer"), str) or not isinstance(
                            hit.answer.get("citations"), list):
                        raise TypeError("the cached answer lacks answer/citations")
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    raise Unavailable(f"malformed cache hit from {self.service.url}: {exc}") from exc
                return Lookup("hit", hit)
            if status not in ("miss", "off"):
                raise Unavailable(f"cache-check at {self.service.url} answered cache={status!r}")
        return Lookup(status)  # "off": the service runs without Redis, so it neither serves nor stores

    def store(self, question: str, key: AnswerKey, answer: dict, documents: list[str], lookup: Lookup) -> bool:
        if lookup.status == "off":
            return False
        with self.breaker.guard():
            payload = self.service.post({"op": "store", "question": question, "answer": answer, "cited": documents,
                                         **self._scope(key)}, key.caller)
        return bool(payload.get("stored"))
