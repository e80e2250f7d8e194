"""Dead letters: events that failed for good, kept with why, until someone replays or drops them."""

# Two stores hold them. `ragfn dev`'s local broker writes files under RAGFN_HOME (DeadLetterStore). In a cluster the
# Knative Broker sends what it gives up on to the ragfn-dead-letter function, which keeps it in a capped Redis stream
# (RedisDeadLetterStore) when RAGFN_REDIS_URL is set, else in the same files. Readers (`ragfn dlq`, the gateway's
# upload status) see both through `open_dead_letters`.

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from ragfn.core.errors import BadEvent, Unavailable

log = logging.getLogger("ragfn.deadletter")

# Knative's extensions on an event it dead-letters (knative.dev/eventing/pkg/channel/attributes): the subscriber's
# URL, its last HTTP status, and the start of its reply body, base64-encoded.
ERROR_DEST, ERROR_CODE, ERROR_DATA = "knativeerrordest", "knativeerrorcode", "knativeerrordata"
_HINT = "list them with `ragfn dlq list`"


@dataclass(frozen=True)
class DeadLetter:
    id: str
    trigger: str
    subscriber: str
    status: int | None  # the subscriber's last HTTP status; None when it could not be reached or nobody said
    error: str
    attempts: int | None  # None when the broker did not say (Knative does not)
    failed_at: str
    event: dict  # the event in structured JSON form, with Knative's knativeerror* extensions added


class DeadLetters(Protocol):
    def add(self, *, trigger: str, subscriber: str, status: int | None, error: str, attempts: int | None,
            event: dict) -> DeadLetter: ...

    def list(self, since: datetime | None = None) -> list[DeadLetter]: ...  # oldest first

    def get(self, letter_id: str) -> DeadLetter: ...

    def remove(self, letter_id: str) -> None: ...


def new_letter(*, trigger: str, subscriber: str, status: int | None, error: str, attempts: int | None,
               event: dict) -> DeadLetter:
    return DeadLetter(id=uuid.uuid4().hex[:12], trigger=trigger, subscriber=subscriber, status=status,
                      error=error[:2000], attempts=attempts,
                      failed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      event=event | {ERROR_DEST: subscriber, ERROR_CODE: str(status or 0)})


def original_event(letter: DeadLetter) -> dict:
    """The event as it was first sent: without the extensions the failure added."""
    return {k: v for k, v in letter.event.items() if not k.startswith("knativeerror")}


def check_id(letter_id: str, where: str) -> str:
    if not letter_id.isalnum():  # ids become file names and stream fields: nothing else may get through
        raise BadEvent(f"no dead letter {letter_id!r} in {where}", hint=_HINT)
    return letter_id


def _after(letter: DeadLetter, since: datetime | None) -> bool:
    return since is None or datetime.fromisoformat(letter.failed_at) >= since


class DeadLetterStore:
    """One JSON file per letter under a folder: `ragfn dev`'s store, and the cluster's when it has no Redis."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def add(self, *, trigger: str, subscriber: str, status: int | None, error: str, attempts: int | None,
            event: dict) -> DeadLetter:
        self.directory.mkdir(parents=True, exist_ok=True)
        letter = new_letter(trigger=trigger, subscriber=subscriber, status=status, error=error, attempts=attempts,
                            event=event)
        staging = self.directory / f".{letter.id}.tmp"
        staging.write_text(json.dumps(asdict(letter), indent=2))
        os.replace(staging, self.directory / f"{letter.id}.json")  # never a half-written letter
        return letter

    def list(self, since: datetime | None = None) -> list[DeadLetter]:
        if not self.directory.is_dir():
            return []
        letters = [DeadLetter(**json.loads(p.read_text())) for p in self.directory.glob("*.json")]
        return sorted((letter for letter in letters if _after(letter, since)), key=lambda letter: letter.failed_at)

    def get(self, letter_id: str) -> DeadLetter:
        path = self.directory / f"{check_id(letter_id, str(self.directory))}.json"
        if not path.is_file():
            raise BadEvent(f"no dead letter {letter_id!r} in {self.directory}", hint=_HINT)
        return DeadLetter(**json.loads(path.read_text()))

    def remove(self, letter_id: str) -> None:
        (self.directory / f"{self.get(letter_id).id}.json").unlink()

    original_event = staticmethod(original_event)  # the local broker's replay calls it on its store


class AllDeadLetters:
    """Several stores read as one (files and Redis); new letters go to the first."""

    def __init__(self, stores: Sequence[DeadLetters]) -> None:
        self.stores = list(stores)

    def add(self, **letter) -> DeadLetter:
        return self.stores[0].add(**letter)

    def list(self, since: datetime | None = None, *, skip_unavailable: bool = False) -> list[DeadLetter]:
        """Oldest first. `skip_unavailable`: what the stores that answer hold, rather than an error, when one (Redis)
        is down."""
        letters: list[DeadLetter] = []
        for store in self.stores:
            try:
                letters += store.list(since)
            except Unavailable as exc:
                if not skip_unavailable:
                    raise
                log.warning("dead letters read without one store: %s", exc)
        return sorted(letters, key=lambda letter: letter.failed_at)

    def holder(self, letter_id: str) -> tuple[DeadLetters, DeadLetter]:
        for store in self.stores:
            try:
                return store, store.get(letter_id)
            except BadEvent:
                continue
        raise BadEvent(f"no dead letter {letter_id!r}", hint=_HINT)

    def get(self, letter_id: str) -> DeadLetter:
        return self.holder(letter_id)[1]

    def remove(self, letter_id: str) -> None:
        store, _ = self.holder(letter_id)
        store.remove(letter_id)


# The newest letters are kept; older ones are trimmed. A burst beyond this usually means one broken function, whose
# first letters already say why; XADD's approximate trim keeps the cost of capping constant.
MAX_LETTERS = 10_000


def redis_client(url: str):
    import redis

    from ragfn.core.telemetry import traced_redis

    return traced_redis(redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5))


class RedisDeadLetterStore:
    def __init__(self, client, prefix: str, *, max_letters: int = MAX_LETTERS) -> None:
        self.client, self.key, self.max_letters = client, f"{prefix}:dlq", max_letters

    def add(self, *, trigger: str, subscriber: str, status: int | None, error: str, attempts: int | None,
            event: dict) -> DeadLetter:
        letter = new_letter(trigger=trigger, subscriber=subscriber, status=status, error=error, attempts=attempts,
                            event=event)
        self._call(lambda: self.client.xadd(self.key, {"id": letter.id, "letter": json.dumps(asdict(letter))},
                                            maxlen=self.max_letters, approximate=True))
        return letter

    def list(self, since: datetime | None = None) -> list[DeadLetter]:
        # stream ids start with the Redis server's clock in milliseconds, so `since` skips older letters unread
        start = f"{int(since.timestamp() * 1000)}-0" if since else "-"
        return [letter for _, letter in self._entries(start)]

    def get(self, letter_id: str) -> DeadLetter:
        return self._find(letter_id)[1]

    def remove(self, letter_id: str) -> None:
        entry_id, _ = self._find(letter_id)
        self._call(lambda: self.client.xdel(self.key, entry_id))

    def _find(self, letter_id: str) -> tuple[bytes, DeadLetter]:
        check_id(letter_id, self.key)
        for entry_id, letter in self._entries("-"):
            if letter.id == letter_id:
                return entry_id, letter
        raise BadEvent(f"no dead letter {letter_id!r} in Redis stream {self.key}",
                       hint="list them with `ragfn dlq list`")

    def _entries(self, start: str):
        rows = self._call(lambda: self.client.xrange(self.key, min=start, max="+"))
        for entry_id, fields in rows:
            raw = fields.get(b"letter", fields.get("letter"))  # bytes, or str from a decode_responses client
            if raw is not None:
                yield entry_id, DeadLetter(**json.loads(raw))

    def _call(self, operation):
        import redis

        try:
            return operation()
        except redis.RedisError as exc:
            raise Unavailable(f"the dead-letter stream {self.key} is unavailable: {type(exc).__name__}: {exc}",
                              hint="check RAGFN_REDIS_URL") from exc


def open_dead_letters(settings, redis=None) -> AllDeadLetters:
    """Where letters are written (Redis when RAGFN_REDIS_URL is set, else files) first, then the files, which
    `ragfn dev`'s broker writes whatever the settings say. `redis` reuses a process's client."""
    files = DeadLetterStore(settings.dead_letter_path)
    if not settings.redis_url:
        return AllDeadLetters([files])
    return AllDeadLetters([RedisDeadLetterStore(redis if redis is not None else redis_client(settings.redis_url),
                                                settings.cache_prefix), files])


def knative_letter(event: Mapping[str, object]) -> dict:
    """The DeadLetter fields Knative's extensions tell, for an event its broker dead-lettered to us."""
    subscriber = str(event.get(ERROR_DEST) or "")
    try:
        status: int | None = int(str(event.get(ERROR_CODE)))
    except ValueError:
        status = None
    raw = str(event.get(ERROR_DATA) or "")
    try:
        error = base64.b64decode(raw, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        error = raw  # not base64 after all: keep what was sent
    return {"trigger": trigger_of(subscriber), "subscriber": subscriber, "status": status or None,
            "error": error or ("delivery failed" if subscriber else "no delivery details: not sent by a broker"),
            "attempts": None}


def trigger_of(subscriber: str) -> str:
    """The Trigger behind a failed subscriber URL: the channel-based broker's filter URL names it
    (/triggers/NAMESPACE/NAME/UID); elsewhere it is the Service's host name, which our Triggers share."""
    parts = urlsplit(subscriber)
    path = [p for p in parts.path.split("/") if p]
    if len(path) >= 3 and path[0] == "triggers":
        return path[2]
    return (parts.hostname or "").split(".")[0] or "unknown"


def receive(headers: Mapping[str, str], body: bytes, store: DeadLetters) -> DeadLetter:
    """Keep one event a Knative Broker gave up on (the ragfn-dead-letter function); any type, any data."""
    from cloudevents import exceptions as ce_errors
    from cloudevents.conversion import to_structured
    from cloudevents.http import from_http

    try:
        event = from_http({k.lower(): v for k, v in headers.items()}, body)
        # structured JSON keeps every attribute and any data (binary data as data_base64), and replays as is
        structured = json.loads(to_structured(event)[1])
    except (ce_errors.GenericException, ValueError, TypeError) as exc:
        raise BadEvent(f"not a CloudEvent: {exc}", hint="the dead-letter sink takes what a Knative Broker or "
                       "Trigger dead-letters: a CloudEvent in binary or structured mode") from exc
    return store.add(**knative_letter(structured), event=structured)


def replay(letter: DeadLetter, sink: str, *, timeout: float = 10.0, token: str | None = None) -> None:
    """Send a letter's original event to a broker (or any sink) in binary mode, with `token` as the bearer where
    the broker wants one (sender identity); Unavailable when it refuses."""
    import httpx
    from cloudevents.conversion import to_binary
    from cloudevents.http import from_http

    event = from_http({"content-type": "application/cloudevents+json"}, json.dumps(original_event(letter)))
    headers, body = to_binary(event)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        response = httpx.post(sink, headers=headers, content=body, timeout=timeout)
    except httpx.HTTPError as exc:
        raise Unavailable(f"cannot replay {letter.id} to {sink}: {exc}") from exc
    if response.status_code >= 300:
        raise Unavailable(f"{sink} answered {response.status_code} to the replay of {letter.id}: "
                          f"{response.text[:200]}")
