"""Dead letters on disk: events that failed for good, kept with why, until someone replays or drops them."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from ragfn.errors import BadEvent


@dataclass(frozen=True)
class DeadLetter:
    id: str
    trigger: str
    subscriber: str
    status: int | None  # the subscriber's last HTTP status; None when it could not be reached
    error: str
    attempts: int
    failed_at: str
    event: dict  # the event in structured JSON form, with Knative's knativeerror* extensions added


class DeadLetterStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def add(self, *, trigger: str, subscriber: str, status: int | None, error: str, attempts: int,
            event: dict) -> DeadLetter:
        self.directory.mkdir(parents=True, exist_ok=True)
        letter = DeadLetter(id=uuid.uuid4().hex[:12], trigger=trigger, subscriber=subscriber, status=status,
                            error=error[:2000], attempts=attempts,
                            failed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            event=event | {"knativeerrordest": subscriber, "knativeerrorcode": str(status or 0)})
        staging = self.directory / f".{letter.id}.tmp"
        staging.write_text(json.dumps(asdict(letter), indent=2))
        os.replace(staging, self.directory / f"{letter.id}.json")  # never a half-written letter
        return letter

    def list(self) -> list[DeadLetter]:
        if not self.directory.is_dir():
            return []
        letters = [DeadLetter(**json.loads(p.read_text())) for p in self.directory.glob("*.json")]
        return sorted(letters, key=lambda letter: letter.failed_at)

    def get(self, letter_id: str) -> DeadLetter:
        path = self.directory / f"{letter_id}.json"
        if not letter_id.isalnum() or not path.is_file():
            raise BadEvent(f"no dead letter {letter_id!r} in {self.directory}", hint="list them with `ragfn dlq list`")
        return DeadLetter(**json.loads(path.read_text()))

    def remove(self, letter_id: str) -> None:
        (self.directory / f"{self.get(letter_id).id}.json").unlink()

    @staticmethod
    def original_event(letter: DeadLetter) -> dict:
        return {k: v for k, v in letter.event.items() if not k.startswith("knativeerror")}
