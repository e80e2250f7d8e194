"""Outgoing CloudEvents: a small value object, and publishers that send to a sink or keep them in-process."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from pydantic import BaseModel

from ragfn.core.config import Settings
from ragfn.core.errors import ConfigError, Unavailable, is_retryable_status
from ragfn.core.telemetry import inject_trace
from ragfn.eventing import events


@dataclass(frozen=True)
class OutboundEvent:
    type: str
    data: BaseModel
    key: str = field(default="", compare=False)  # stable identity: redeliveries produce the same event id
    subject: str | None = None

    def to_cloudevent(self) -> CloudEvent:
        identity = self.key or self.data.model_dump_json()
        attributes = {
            "type": self.type,
            "source": events.SOURCE,
            "id": hashlib.sha256(f"{self.type}|{identity}".encode()).hexdigest()[:32],
            "datacontenttype": "application/json",
        }
        if self.subject:
            attributes["subject"] = self.subject
        inject_trace(attributes)
        return CloudEvent(attributes, self.data.model_dump(mode="json"))


@dataclass
class StageResult:
    """What a pipeline stage produced: events to send on, and a summary for logs and HTTP replies."""

    events: list[OutboundEvent] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


class Publisher(Protocol):
    def publish(self, outgoing: list[OutboundEvent]) -> None: ...


class HttpPublisher:
    """Posts binary-mode CloudEvents to a Broker or K_SINK, as Knative's SinkBinding expects.

    With sender identity on, the SinkBinding also mounts an OIDC token for the Broker's audience at /oidc/token and
    renews it there: it is read for every event (a few hundred bytes) and sent as `Authorization: Bearer`."""

    def __init__(self, sink: str, *, timeout: float = 10.0, token_file: Path | None = None) -> None:
        self.sink, self.token_file = sink, token_file
        self._client = httpx.Client(timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpPublisher:
        if not settings.sink:
            raise ConfigError("no sink to publish events to",
                              hint="set K_SINK (Knative SinkBinding does) or RAGFN_SINK to the broker URL")
        return cls(settings.sink, token_file=settings.sink_token_file)

    def _token(self) -> str | None:
        if self.token_file is None:
            return None
        try:
            return self.token_file.read_text().strip() or None
        except FileNotFoundError:
            return None  # sender identity is off: no SinkBinding token
        except OSError as exc:
            raise ConfigError(f"cannot read the sink token {self.token_file}: {exc.strerror or exc}") from exc

    def publish(self, outgoing: list[OutboundEvent]) -> None:
        for event in outgoing:
            headers, body = to_binary(event.to_cloudevent())
            if token := self._token():
                headers["Authorization"] = f"Bearer {token}"
            try:
                response = self._client.post(self.sink, headers=headers, content=body)
            except httpx.HTTPError as exc:
                raise Unavailable(f"cannot publish {event.type} to {self.sink}: {exc}") from exc
            if response.status_code in (401, 403):
                raise ConfigError(f"sink {self.sink} refused {event.type}: {response.status_code} "
                                  f"{response.text[:200]}", hint="with sender identity on, the SinkBinding mounts the "
                                  f"token at {self.token_file} (RAGFN_SINK_TOKEN_FILE); the Broker's EventPolicy "
                                  "must name the SinkBinding")
            if response.status_code >= 300:
                error = Unavailable if is_retryable_status(response.status_code) else ConfigError
                raise error(f"sink {self.sink} answered {response.status_code} to {event.type}: {response.text[:200]}")


class CollectingPublisher:
    """Keeps events in memory: the in-process pipeline reads them back instead of going over HTTP."""

    def __init__(self) -> None:
        self.events: list[OutboundEvent] = []

    def publish(self, outgoing: list[OutboundEvent]) -> None:
        self.events.extend(outgoing)
