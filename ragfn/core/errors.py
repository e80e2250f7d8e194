"""The one error tree; each class knows its HTTP status and whether Knative should retry it.

    RagfnError
    ├── BadEvent            400  permanent: malformed, unknown type, missing attributes, wrong payload
    │   ├── UnsafeKey       400  a key escapes its root ("../"), absolute paths, NUL bytes
    │   ├── UnsupportedContent 400  empty, binary or undecodable objects, unknown formats
    │   └── ObjectTooLarge  400  larger than RAGFN_MAX_OBJECT_BYTES
    ├── ObjectNotFound      404  the object an event names is gone (Knative retries 404: it may be eventual consistency)
    ├── ConfigError         500  settings that cannot work (missing model folder, bad URL); retried, and fixable
    └── Unavailable         503  a dependency is down or slow (store, object storage, sink); retried
        └── RateLimited     429
"""

from __future__ import annotations


class RagfnError(Exception):
    status: int = 500
    retryable: bool = True

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"error": type(self).__name__, "message": self.message, "retryable": self.retryable}
        if self.hint:
            body["hint"] = self.hint
        return body

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class BadEvent(RagfnError):
    status = 400
    retryable = False


class UnsafeKey(BadEvent):
    pass


class UnsupportedContent(BadEvent):
    pass


class ObjectTooLarge(BadEvent):
    pass


class RequestTooLarge(ObjectTooLarge):
    """A request body over its limit, refused unread (ragfn.serve.handler.read_body)."""


class ObjectNotFound(RagfnError):
    status = 404


class ConfigError(RagfnError):
    status = 500


class Unavailable(RagfnError):
    status = 503


class RateLimited(Unavailable):
    status = 429


def problems(exc) -> str:
    """The first few of a pydantic ValidationError's errors as `field.path: message`, for a 400 a person can act on."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in exc.errors()[:5])


def is_retryable_status(status: int) -> bool:
    """Knative's delivery spec: retry 404, 408, 409, 429 and 5xx; everything else is final."""
    return status in (404, 408, 409, 429) or status >= 500
