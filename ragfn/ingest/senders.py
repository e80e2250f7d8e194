"""Who may send bucket notifications to the bucket-events function, and about which objects.

RAGFN_SENDER_KEYS_FILE, a JSON object apart from the chat users' RAGFN_API_KEYS_FILE (a Secret of its own):

    {"<sha256 hex of a key>": {"name": "minio-docs", "prefixes": ["s3://docs/"]},
     "pubsub:<service account email>": {"name": "gcs-handbook", "prefixes": ["gs://corp-docs/handbook/"]}}

- A key sender (MinIO's webhook `auth_token`) presents `Authorization: Bearer <key>`. A key in the URL (`?token=`)
  is refused: proxies, access logs and Pub/Sub's own configuration keep URLs.
- A Pub/Sub push subscription cannot set headers. It authenticates with the OIDC token Google signs for its push
  service account (`--push-auth-service-account`, audience RAGFN_PUBSUB_AUDIENCE), checked against Google's keys
  (RAGFN_PUBSUB_JWKS_URL): issuer, audience, expiry, a verified email that the file names.
- Every object a notification names must lie under one of its sender's prefixes (`s3://bucket/prefix/`,
  `gs://bucket/`): a sender's key cannot index another bucket's objects.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ragfn.core.auth import Forbidden, Unauthorized, bearer, json_object_file
from ragfn.core.errors import ConfigError
from ragfn.core.oidc import SigningKeys, verified_claims

GOOGLE_JWKS_URL = "https://www.googleapis.com/oauth2/v3/certs"
GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_PREFIX = re.compile(r"(s3|gs)://[^/]+/.*")
_HOW = "send `Authorization: Bearer <key>` (a key of RAGFN_SENDER_KEYS_FILE), or push from Pub/Sub with " \
       "--push-auth-service-account"


@dataclass(frozen=True)
class Sender:
    name: str
    prefixes: tuple[str, ...]

    def check(self, uri: str) -> None:
        if not any(uri.startswith(prefix) for prefix in self.prefixes):
            raise Forbidden(f"sender {self.name!r} may not announce {uri}",
                            hint=f"its prefixes are {', '.join(self.prefixes)} (RAGFN_SENDER_KEYS_FILE)")


class Senders:
    def __init__(self, entries: Mapping[str, object], *, pubsub_audience: str | None = None,
                 jwks_url: str = GOOGLE_JWKS_URL) -> None:
        self._keys: dict[str, Sender] = {}
        self._accounts: dict[str, Sender] = {}
        for name, entry in entries.items():
            sender = _sender(name, entry)
            if name.startswith("pubsub:"):
                self._accounts[name.removeprefix("pubsub:").lower()] = sender
            elif _DIGEST.fullmatch(name):
                self._keys[name] = sender
            else:  # never echo it: a plaintext key pasted by mistake would end up in the logs
                raise ConfigError("RAGFN_SENDER_KEYS_FILE: entries are a key's sha256 hex digest or "
                                  "pubsub:<service account email>", hint="never store the key itself")
        if self._accounts and not pubsub_audience:
            raise ConfigError("RAGFN_SENDER_KEYS_FILE names Pub/Sub service accounts but RAGFN_PUBSUB_AUDIENCE is "
                              "unset", hint="the audience the push subscription's OIDC tokens carry")
        self.pubsub_audience, self.jwks_url = pubsub_audience, jwks_url
        self._jwks = None

    @classmethod
    def from_file(cls, path: str | Path, **options) -> Senders:
        return cls(json_object_file(path, "RAGFN_SENDER_KEYS_FILE", hint='{"<sha256 of key>": {"name": ..., '
                                    '"prefixes": ["s3://bucket/prefix/"]}}'), **options)

    def authenticate(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Sender:
        if "token" in query:
            raise Unauthorized("a key in the URL is refused: URLs are kept by proxies and logs", hint=_HOW)
        credential = bearer(headers)
        if not credential:
            raise Unauthorized("missing sender credentials", hint=_HOW)
        if credential.count(".") == 2 and self._accounts:
            return self._pubsub(credential)
        digest = hashlib.sha256(credential.encode()).hexdigest()
        found = None
        for known, sender in self._keys.items():  # no early exit: the time taken does not say which key matched
            if hmac.compare_digest(known, digest):
                found = sender
        if found is None:
            raise Unauthorized("unknown sender key", hint=_HOW)
        return found

    def _pubsub(self, token: str) -> Sender:
        if self._jwks is None:
            self._jwks = SigningKeys(self.jwks_url, lifespan=3600)
        claims = verified_claims(token, self._jwks, audience=self.pubsub_audience, issuer=GOOGLE_ISSUERS,
                                 require=("exp", "iat", "aud", "iss", "email"), what="Pub/Sub push token", hint=_HOW,
                                 algorithms=("RS256",))  # what Google signs with
        email = str(claims.get("email", "")).lower()
        sender = self._accounts.get(email)
        if sender is None or claims.get("email_verified") is not True:
            raise Unauthorized(f"Pub/Sub push from {email or 'an unnamed account'} is not a sender here",
                               hint='add "pubsub:<its service account email>" to RAGFN_SENDER_KEYS_FILE')
        return sender


def _sender(name: str, entry: object) -> Sender:
    label = name if name.startswith("pubsub:") else f"{name[:12]}..."
    if not isinstance(entry, Mapping) or not isinstance(entry.get("prefixes"), list) or not entry["prefixes"]:
        raise ConfigError(f"RAGFN_SENDER_KEYS_FILE {label}: needs a non-empty list of prefixes",
                          hint='e.g. "prefixes": ["s3://docs/", "gs://corp-docs/handbook/"]')
    bad = [p for p in entry["prefixes"] if not isinstance(p, str) or not _PREFIX.fullmatch(p)]
    if bad:
        raise ConfigError(f"RAGFN_SENDER_KEYS_FILE {label}: {bad[0]!r} is not an s3:// or gs:// bucket prefix",
                          hint="s3://bucket/ or s3://bucket/folder/")
    return Sender(str(entry.get("name") or label), tuple(entry["prefixes"]))


class SenderFile:
    """RAGFN_SENDER_KEYS_FILE as it is now: read on every request (a rotated Secret applies at once), parsed again
    only when it changed, so a Pub/Sub sender's cached Google keys survive between requests."""

    def __init__(self, path: str | Path, **options) -> None:
        self.path, self.options = Path(path), options
        self._raw: bytes | None = None
        self._senders: Senders | None = None

    def current(self) -> Senders:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read RAGFN_SENDER_KEYS_FILE={self.path}: {exc.strerror or exc}") from exc
        if raw != self._raw or self._senders is None:
            self._senders, self._raw = Senders.from_file(self.path, **self.options), raw
        return self._senders
