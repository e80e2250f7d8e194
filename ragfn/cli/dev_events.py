"""The eventing side of `ragfn dev`: sender identity as a cluster with Knative's authentication-oidc has it.

The local broker signs each delivery with its Trigger's identity (ragfn.eventing.dev_issuer); each function is told
its audience and who may deliver to it, from the same Trigger YAML the cluster applies; whatever publishes to the
broker (the functions, the gateway's uploads, `ragfn ingest --dev`) sends the token that `SinkTokenWriter` keeps
fresh in a file, as Knative's SinkBinding does at /oidc/token.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from pathlib import Path

import httpx

from ragfn.eventing.delivery_auth import broker_audience, pingsource_identity, senders_by_service
from ragfn.eventing.dev_issuer import NAMESPACE, DevIssuer
from ragfn.eventing.triggers import Trigger

BROKER = "ragfn"
PUBLISHER_IDENTITY = "ragfn-dev-oidc-sources.knative.dev-sinkbinding"
MAINTAIN = "ragfn-maintain"  # pinged by a PingSource of that name in a cluster (components/lancedb)
log = logging.getLogger("ragfn.dev")


def delivery_env(service: str, triggers: list[Trigger], jwks_url: str) -> dict[str, str]:
    """RAGFN_EVENT_* for one dev function: its audience and senders; {} for a function no event reaches."""
    senders = senders_by_service(triggers).get(service, [])
    if service == MAINTAIN:
        senders = [*senders, pingsource_identity(MAINTAIN)]
    if not senders:
        return {}
    return {"RAGFN_EVENT_AUDIENCE": service, "RAGFN_EVENT_NAMESPACE": NAMESPACE,
            "RAGFN_EVENT_SENDERS": ",".join(senders), "RAGFN_EVENT_JWKS_URL": jwks_url}


def dev_broker_audience() -> str:
    return broker_audience(NAMESPACE, BROKER)


class SinkTokenWriter:
    """Keeps a token for the dev broker in `path` (0600), renewed at a third of its life, until `stop` is set."""

    def __init__(self, issuer: DevIssuer, path: Path) -> None:
        self.issuer, self.path = issuer, path

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staged = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.issuer.token(PUBLISHER_IDENTITY, dev_broker_audience()))
        os.replace(staged, self.path)  # a reader sees the old token or the new one, never half of one

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.issuer.token_seconds / 3):
            try:
                self.write()
            except OSError as exc:  # the next turn tries again; the current token still has two thirds left
                log.warning("cannot renew the sink token %s: %s", self.path, exc)


def maintenance_timer(url: str, interval: float, stop: threading.Event, issuer: DevIssuer | None = None) -> None:
    """The cluster's PingSource ragfn-maintain, for `ragfn dev`: a ping to the maintain function every `interval`,
    with the PingSource's identity."""
    while not stop.wait(interval):
        headers = {"ce-specversion": "1.0", "ce-type": "dev.knative.sources.ping", "ce-source": "ragfn-dev/maintenance",
                   "ce-id": uuid.uuid4().hex, "content-type": "application/json"}
        if issuer is not None:
            headers["Authorization"] = f"Bearer {issuer.token(pingsource_identity(MAINTAIN), MAINTAIN)}"
        try:
            httpx.post(url, timeout=interval, headers=headers, content=b"{}")
        except httpx.HTTPError as exc:  # the function's own log says why; the next tick tries again
            log.warning("maintenance ping failed: %s", exc)
