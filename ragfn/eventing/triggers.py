"""Knative Trigger YAML, read for the local broker: the same files the cluster applies, one routing truth."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from ragfn.core.errors import ConfigError

_DURATION = re.compile(r"^PT(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?$")


def parse_duration(text: str) -> float:
    """ISO-8601 time durations as Knative writes them (PT0.2S, PT1M); seconds as a float."""
    match = _DURATION.match(text or "")
    if not match or not any(match.groupdict().values()):
        raise ConfigError(f"bad ISO-8601 duration {text!r}", hint="write it like PT0.5S or PT1M")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)


@dataclass(frozen=True)
class Delivery:
    retry: int = 0
    backoff_policy: str = "exponential"
    backoff_delay: float = 0.2
    dead_letter_sink: str | None = None  # a Service name (deadLetterSink.ref.name) or a URI

    @property
    def dead_letter(self) -> bool:
        return self.dead_letter_sink is not None

    def delay(self, attempt: int) -> float:
        """Knative's backoff: delay * 2^attempt (exponential) or delay * attempt (linear), attempt from 1."""
        if self.backoff_policy == "linear":
            return self.backoff_delay * attempt
        return self.backoff_delay * 2 ** (attempt - 1)


@dataclass(frozen=True)
class Trigger:
    name: str
    subscriber: str  # a Service name (subscriber.ref.name) or a URI
    filter: Mapping[str, str]  # spec.filter.attributes: exact matches, all must hold
    filters: tuple[Mapping, ...]  # spec.filters: the newer dialect (exact/prefix/suffix/all/any/not)
    delivery: Delivery
    audience: str | None = None  # subscriber.audience: what the delivery token is issued for (sender identity)

    def matches(self, attributes: Mapping[str, object]) -> bool:
        if any(str(attributes.get(k, "")) != v for k, v in self.filter.items()):
            return False
        return all(_matches(expr, attributes) for expr in self.filters)


def _matches(expr: Mapping, attributes: Mapping[str, object]) -> bool:
    (dialect, body), = expr.items()
    if dialect == "all":
        return all(_matches(e, attributes) for e in body)
    if dialect == "any":
        return any(_matches(e, attributes) for e in body)
    if dialect == "not":
        return not _matches(body, attributes)
    tests = {"exact": str.__eq__, "prefix": str.startswith, "suffix": str.endswith}
    if dialect not in tests:
        raise ConfigError(f"unsupported Trigger filter dialect {dialect!r}", hint="use exact, prefix, suffix, all, any, not")
    return all(k in attributes and tests[dialect](str(attributes[k]), v) for k, v in body.items())


def load_triggers(directory: Path) -> list[Trigger]:
    triggers = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Trigger":
                triggers.append(_trigger(doc, path))
    if not triggers:
        raise ConfigError(f"no Trigger found in {directory}", hint="point RAGFN dev at the repository's eventing/triggers")
    return triggers


def _trigger(doc: dict, path: Path) -> Trigger:
    spec = doc.get("spec") or {}
    subscriber = spec.get("subscriber") or {}
    target = (subscriber.get("ref") or {}).get("name") or subscriber.get("uri")
    if not target:
        raise ConfigError(f"{path}: Trigger {doc.get('metadata', {}).get('name')} has no subscriber ref or uri")
    raw = spec.get("delivery") or {}
    delivery = Delivery(retry=int(raw.get("retry", 0)), backoff_policy=raw.get("backoffPolicy", "exponential"),
                        backoff_delay=parse_duration(raw["backoffDelay"]) if "backoffDelay" in raw else 0.2,
                        dead_letter_sink=_destination(raw.get("deadLetterSink")))
    return Trigger(name=doc["metadata"]["name"], subscriber=target,
                   filter=dict((spec.get("filter") or {}).get("attributes") or {}),
                   filters=tuple(spec.get("filters") or ()), delivery=delivery, audience=subscriber.get("audience"))


def _destination(destination: dict | None) -> str | None:
    if destination is None:
        return None
    return (destination.get("ref") or {}).get("name") or destination.get("uri") or "unnamed"
