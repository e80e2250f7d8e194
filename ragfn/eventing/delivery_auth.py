"""Who may deliver events to a function, and with which token.

With Knative Eventing's sender identity on (config-features `authentication-oidc: enabled`), the Broker's filter
delivers each event with an OIDC token of the Trigger's own service account, issued by the cluster for the
subscriber's audience (the Trigger's `subscriber.audience`); a PingSource sends with its own. A function with
RAGFN_EVENT_AUDIENCE set answers 401 to a delivery without such a token, checked before the body is read:
- signed by the issuer (the cluster's service-account issuer: its keys at RAGFN_EVENT_JWKS_URL, fetched with the
  pod's projected token), unexpired, for this function's audience;
- from a service account in RAGFN_EVENT_NAMESPACE that RAGFN_EVENT_SENDERS names (fnmatch patterns): the Triggers
  that route to this function, not any pod of the cluster, nor another namespace's Trigger pointed at its URL.

Knative names a Trigger's identity `<trigger>-oidc-eventing.knative.dev-trigger` (Eventing 1.13 and later;
`kubectl get trigger NAME -o jsonpath='{.status.auth.serviceAccountName}'` shows it). `senders_by_service` derives,
from the Trigger YAML, who delivers to which Service: `ragfn dev` wires its functions from it, and a test keeps the
production component (manifests/components/event-oidc) equal to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from ragfn.core.auth import Forbidden, Unauthorized, bearer
from ragfn.core.config import Settings
from ragfn.core.errors import ConfigError, Unavailable
from ragfn.core.oidc import REFETCH_SECONDS, SigningKeys, discovered_issuer, verified_claims
from ragfn.eventing.triggers import Trigger

_HOW = "deliveries come from the Broker with Knative's sender identity (authentication-oidc) for this audience"


def trigger_identity(trigger: str) -> str:
    return f"{trigger}-oidc-eventing.knative.dev-trigger"


def pingsource_identity(source: str) -> str:
    return f"{source}-oidc-sources.knative.dev-pingsource"


def broker_audience(namespace: str, broker: str) -> str:
    """The audience a Broker announces (status.address.audience): what its senders' tokens carry."""
    return f"eventing.knative.dev/broker/{namespace}/{broker}"


def subject(namespace: str, account: str) -> str:
    return f"system:serviceaccount:{namespace}:{account}"


def senders_by_service(triggers: Iterable[Trigger]) -> dict[str, list[str]]:
    """Service name -> the identities that deliver to it: each Trigger to its subscriber and its dead-letter sink."""
    found: dict[str, list[str]] = {}
    for trigger in triggers:
        for service in filter(None, (trigger.subscriber, trigger.delivery.dead_letter_sink)):
            if "://" not in service:
                found.setdefault(service, []).append(trigger_identity(trigger.name))
    return {service: sorted(set(names)) for service, names in found.items()}


@dataclass(frozen=True)
class DeliveryPolicy:
    audience: str
    namespace: str
    senders: tuple[str, ...]  # service account names in `namespace`, fnmatch patterns

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy | None:
        if not settings.event_audience:
            return None
        senders = tuple(s.strip() for s in (settings.event_senders or "").split(",") if s.strip())
        if not settings.event_namespace or not senders:
            raise ConfigError("RAGFN_EVENT_AUDIENCE is set but RAGFN_EVENT_NAMESPACE or RAGFN_EVENT_SENDERS is not",
                              hint="name the namespace and the service accounts (e.g. the Triggers' "
                                   "<trigger>-oidc-eventing.knative.dev-trigger) that may deliver here")
        return cls(settings.event_audience, settings.event_namespace, senders)

    def allows(self, sub: str) -> bool:
        prefix = subject(self.namespace, "")
        return sub.startswith(prefix) and any(fnmatchcase(sub[len(prefix):], p) for p in self.senders)


class DeliveryVerifier:
    def __init__(self, policy: DeliveryPolicy, keys: SigningKeys, *, issuer: str | None = None) -> None:
        self.policy, self.keys, self._issuer = policy, keys, issuer
        self._lock = threading.Lock()
        self._tried = float("-inf")

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryVerifier | None:
        policy = DeliveryPolicy.from_settings(settings)
        if policy is None:
            return None
        keys = SigningKeys(settings.event_jwks_url, token_file=settings.event_jwks_token_file,
                           ca_file=settings.event_jwks_ca_file)
        return cls(policy, keys, issuer=settings.event_issuer)

    def issuer(self) -> str:
        """RAGFN_EVENT_ISSUER, else discovered once (a cluster's issuer does not change under a running pod), and
        after a failure not asked again for REFETCH_SECONDS."""
        with self._lock:
            if self._issuer is None:
                if time.monotonic() - self._tried < REFETCH_SECONDS:
                    raise Unavailable("the issuer of event deliveries is not known yet: its discovery failed lately",
                                      hint=f"the OpenID configuration beside {self.keys.url}")
                self._tried = time.monotonic()
                self._issuer = discovered_issuer(self.keys.url, token_file=self.keys.token_file,
                                                 ca_file=self.keys.ca_file)
            return self._issuer

    def verify(self, headers: Mapping[str, str]) -> str:
        """The sender's subject; Unauthorized without a valid token, Forbidden from an identity not allowed here."""
        token = bearer(headers)
        if not token:
            raise Unauthorized("missing delivery token", hint=_HOW)
        try:
            self.keys.key_for(token)  # a token whose key is unknown costs no discovery
        except Unauthorized as exc:
            raise Unauthorized(f"delivery token: {exc.message}", hint=exc.hint or _HOW) from exc
        claims = verified_claims(token, self.keys, audience=self.policy.audience, issuer=self.issuer(),
                                 what="delivery token", hint=_HOW)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not self.policy.allows(sub):
            raise Forbidden(f"{sub!r} may not deliver events here",
                            hint=f"RAGFN_EVENT_SENDERS names the service accounts of {self.policy.namespace} "
                                 "that may")
        return sub
