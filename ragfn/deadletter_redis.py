"""Dead letters in a capped Redis stream, `{RAGFN_CACHE_PREFIX}:dlq`: the cluster's store, shared by every replica."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime

from ragfn.deadletter import DeadLetter, check_id, new_letter
from ragfn.errors import BadEvent, Unavailable

# The newest letters are kept; older ones are trimmed. A burst beyond this usually means one broken function, whose
# first letters already say why; XADD's approximate trim keeps the cost of capping constant.
MAX_LETTERS = 10_000


def redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


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
