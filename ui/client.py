"""The chat's only way to ragfn: the ask gateway's HTTP API (docs/query.md), with one error tree for the screen.

    GatewayError          anything the gateway refused, with its message and hint (a 503 names the dependency)
    ├── GatewayDown       nothing answered at the URL, or a proxy answered 5xx for it
    ├── SignInRefused     401: the key is unknown or missing
    └── RateLimited       429: the tenant's limit; `retry_after` seconds

    >>> client = GatewayClient("http://127.0.0.1:8091", api_key="rfk-...")
    >>> answer = client.ask("How do I sort a list?", collection="default")
    >>> "".join(answer.tokens()), answer.citations, answer.final["timings_ms"]
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
from httpx_sse import SSEError, connect_sse


class GatewayError(Exception):
    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message, self.hint, self.status = message, hint, status

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class GatewayDown(GatewayError):
    pass


class SignInRefused(GatewayError):
    pass


class RateLimited(GatewayError):
    def __init__(self, message: str, *, retry_after: float, hint: str | None = None) -> None:
        super().__init__(message, hint=hint, status=429)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Me:
    subject: str
    tenant: str
    groups: tuple[str, ...]
    collections: dict[str, dict[str, int]]

    def documents(self, collection: str) -> int:
        return self.collections.get(collection, {}).get("documents", 0)


@dataclass(frozen=True)
class Upload:
    name: str
    document_id: str
    version: str
    collection: str


@dataclass(frozen=True)
class UploadStatus:
    state: str  # queued | indexing | indexed | failed | replaced
    chunks_written: int = 0
    chunks: int | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("indexed", "failed", "replaced")


@dataclass
class StreamedAnswer:
    """One streamed answer: iterate `tokens()` once; status, citations and the final record fill in as they come."""

    events: Iterator[tuple[str, object]]
    statuses: list[dict] = field(default_factory=list)
    citations: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    error: GatewayError | None = None
    text: str = ""
    replaced: dict | None = None  # the `replace` event: the streamed text failed the gate; `text` is its replacement

    def tokens(self, on_status=lambda status: None) -> Iterator[str]:
        for name, data in self.events:
            if name == "token":
                self.text += data
                yield data
            elif name == "replace":  # what was streamed is withdrawn: the page shows `text` instead
                self.replaced, self.text = dict(data), data["text"]
                self.statuses.append(data)
                on_status(data)
            elif name == "status":
                self.statuses.append(data)
                on_status(data)
            elif name == "citations":
                self.citations = list(data)
            elif name == "final":
                self.final = dict(data)
            elif name == "error":  # the gateway failed after it had started answering
                self.error = GatewayError(data.get("message", "the answer failed"), hint=data.get("hint"))


class GatewayClient:
    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.http = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=5.0))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _request(self, method: str, path: str, **kwargs) -> dict:
        try:
            response = self.http.request(method, path, headers=self._headers(), **kwargs)
        except httpx.HTTPError as exc:
            raise self._down(exc) from exc
        self._raise_for(response)
        return response.json()

    def _down(self, exc: Exception) -> GatewayDown:
        return GatewayDown(f"the ask gateway at {self.base_url} is not reachable: {exc or type(exc).__name__}",
                           hint="start it with `ragfn dev`, or set RAGFN_UI_GATEWAY_URL to where it runs")

    def _raise_for(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            body = response.json()
        except ValueError:  # not the gateway's own error body: a proxy in front of a gateway that is not there
            if response.status_code >= 500:
                raise GatewayDown(f"the ask gateway at {self.base_url} answered {response.status_code} "
                                  f"{response.reason_phrase}", hint="is it running?", status=response.status_code)
            body = {"message": response.text[:300] or response.reason_phrase}
        message, hint = str(body.get("message", body)), body.get("hint")
        if response.status_code == 401:
            raise SignInRefused(message, hint=hint or "check the API key", status=401)
        if response.status_code == 429:
            raise RateLimited(message, retry_after=float(response.headers.get("Retry-After", "1")), hint=hint)
        raise GatewayError(message, hint=hint, status=response.status_code)  # up, but it or a dependency refused

    def warmup(self) -> None:
        """Wake a scaled-to-zero model while the user is still typing (the gateway wakes it for signed-in callers
        only); never an error on screen."""
        try:
            self.http.post("/v1/warmup", headers=self._headers(), timeout=2.0)
        except httpx.HTTPError:
            pass

    def me(self) -> Me:
        body = self._request("GET", "/v1/me")
        return Me(body["subject"], body["tenant"], tuple(body["groups"]), body["collections"])

    def ask(self, question: str, *, collection: str) -> StreamedAnswer:
        return StreamedAnswer(self._stream({"question": question, "collection": collection, "stream": True}))

    def _stream(self, body: dict) -> Iterator[tuple[str, object]]:
        try:
            with connect_sse(self.http, "POST", "/v1/ask", json=body, headers=self._headers()) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    self._raise_for(source.response)
                for event in source.iter_sse():
                    yield event.event, json.loads(event.data)
        except (httpx.HTTPError, SSEError) as exc:
            raise self._down(exc) from exc

    def rate(self, answer_id: str, rating: str, comment: str = "") -> dict:
        return self._request("POST", "/v1/feedback", json={"answer_id": answer_id, "rating": rating,
                                                           "comment": comment})

    def upload(self, name: str, data: bytes, *, collection: str) -> Upload:
        body = self._request("POST", "/v1/documents", files={"file": (name, data)}, data={"collection": collection})
        return Upload(name, body["document_id"], body["version"], body["collection"])

    def upload_status(self, upload: Upload) -> UploadStatus:
        body = self._request("GET", "/v1/documents/status", params={
            "document_id": upload.document_id, "version": upload.version, "collection": upload.collection})
        return UploadStatus(body["state"], body.get("chunks_written") or 0, body.get("chunks"), body.get("error"))
