"""Caller identity for the `ask` gateway: hashed API keys, or HS256 JWTs carrying tenant and groups.

Key file (`ApiKeys.from_file`), keyed by the sha256 hex digest of each key so no plaintext key is stored:
    {"<sha256 hex>": {"tenant": "acme", "groups": ["eng"], "name": "ci-bot"}}
`"tenant": ""`, written out, is the untenanted space of a single-tenant install: the documents `ragfn ingest`
indexes without --tenant (`ragfn dev` makes such a key). A missing tenant is still an error.
Make a digest with `python -c "from ragfn.core.auth import ApiKeys; print(ApiKeys.hash('THE-KEY'))"`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ragfn.core.errors import ConfigError, RagfnError

_DIGEST = re.compile(r"[0-9a-f]{64}")
_HOW = "send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
MIN_JWT_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash; PyJWT warns below it


class Unauthorized(RagfnError):
    status = 401
    retryable = False
    # The gateway sends this as WWW-Authenticate with every 401 (RFC 6750 §3).
    challenge = 'Bearer realm="ragfn"'


class Forbidden(RagfnError):
    status = 403
    retryable = False


@dataclass(frozen=True)
class Identity:
    tenant: str
    groups: tuple[str, ...]
    subject: str  # the key's name or the JWT's `sub`: for logs and traces, never a secret


@dataclass(frozen=True)
class _Key:
    digest: str
    identity: Identity


class ApiKeys:
    def __init__(self, keys: Mapping[str, object], *, jwt_secret: str | None = None,
                 jwt_audience: str | None = None, jwt_leeway_seconds: float = 30.0) -> None:
        """`keys` maps sha256 hex digests to {"tenant", "groups", "name"}; a `jwt_secret` also accepts HS256 JWTs."""
        self._keys = [_Key(digest, _identity(digest, entry)) for digest, entry in _checked(keys).items()]
        if jwt_secret is not None and len(jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            raise ConfigError(f"the JWT secret is shorter than {MIN_JWT_SECRET_BYTES} bytes",
                              hint="use a random secret, e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`")
        self._jwt_secret = jwt_secret
        self._jwt_audience = jwt_audience
        self._leeway = jwt_leeway_seconds  # tolerated clock skew between the issuer and this replica

    @classmethod
    def from_file(cls, path: str | Path, *, jwt_secret: str | None = None, jwt_audience: str | None = None,
                  jwt_leeway_seconds: float = 30.0) -> ApiKeys:
        raw = json_object_file(path, "API key file",
                               hint='a JSON object {"<sha256 hex of key>": {"tenant": ..., "groups": [...]}}')
        return cls(raw, jwt_secret=jwt_secret, jwt_audience=jwt_audience, jwt_leeway_seconds=jwt_leeway_seconds)

    @staticmethod
    def hash(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def __len__(self) -> int:
        return len(self._keys)

    def authenticate(self, headers: Mapping[str, str]) -> Identity:
        """The caller behind `Authorization: Bearer ...` (a key, or a JWT when a secret is set) or `X-API-Key`."""
        lowered = {k.lower(): v for k, v in headers.items()}  # plain dicts are case-sensitive; HTTP is not
        credential = _credential(lowered)
        if self._jwt_secret is not None and credential.count(".") == 2:
            return self._verify_jwt(credential, self._jwt_secret)
        digest = self.hash(credential)
        found: Identity | None = None
        for key in self._keys:  # no early exit: the time taken does not depend on which key matched
            if hmac.compare_digest(key.digest, digest):
                found = key.identity
        if found is None:
            raise Unauthorized("unknown API key", hint=_HOW)
        return found

    def _verify_jwt(self, token: str, secret: str) -> Identity:
        try:
            import jwt
        except ImportError as exc:
            raise ConfigError("a JWT arrived but PyJWT is not installed", hint="pip install pyjwt") from exc
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], audience=self._jwt_audience,
                                leeway=self._leeway, options={"require": ["exp"]})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the JWT has expired", hint="get a new token") from exc
        except jwt.InvalidTokenError as exc:
            # PyJWT's messages name the failed check, never the token itself.
            raise Unauthorized(f"invalid JWT: {exc}", hint=_HOW) from exc
        tenant, groups = claims.get("tenant"), claims.get("groups")
        if not isinstance(tenant, str) or not tenant:
            raise Unauthorized("the JWT has no `tenant` claim", hint="issue tokens with tenant and groups claims")
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise Unauthorized("the JWT has no `groups` claim (a list of strings)",
                               hint="issue tokens with tenant and groups claims")
        subject = claims.get("sub")
        return Identity(tenant, tuple(groups), f"jwt:{subject}" if isinstance(subject, str) else "jwt")


def json_object_file(path: str | Path, what: str, *, hint: str) -> dict:
    """A key file's JSON object; ConfigError naming the file and `what` it is otherwise."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}", hint=hint) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path} must hold a JSON object", hint=hint)
    return raw


def authorize(identity: Identity, *, tenant: str | None = None, groups: Sequence[str] | None = None) -> Identity:
    """The identity a request may act as: it may narrow its groups, never name another tenant or widen them."""
    if tenant is not None and tenant != identity.tenant:
        raise Forbidden(f"{identity.subject} may not act for tenant {tenant!r}")
    if groups is None:
        return identity
    extra = sorted(set(groups) - set(identity.groups))
    if extra:
        raise Forbidden(f"{identity.subject} is not in group(s) {', '.join(extra)}")
    return Identity(identity.tenant, tuple(dict.fromkeys(groups)), identity.subject)


def bearer(headers: Mapping[str, str]) -> str:
    """The token of `Authorization: Bearer <token>`, "" when there is none (any header-name case)."""
    scheme, _, token = {k.lower(): v for k, v in headers.items()}.get("authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _credential(headers: Mapping[str, str]) -> str:
    scheme, _, value = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = headers.get("x-api-key", "").strip()
    if key:
        return key  # even beside another scheme's Authorization header (a proxy's Basic credentials)
    if scheme:
        raise Unauthorized("the Authorization header must use the Bearer scheme", hint=_HOW)
    raise Unauthorized("missing credentials", hint=_HOW)


def _checked(keys: Mapping[str, object]) -> Mapping[str, object]:
    for digest in keys:
        if not _DIGEST.fullmatch(digest):
            # Do not echo it: a plaintext key pasted by mistake would end up in the logs.
            raise ConfigError("API keys must be listed by their sha256 hex digest (64 lowercase hex characters)",
                              hint="use ApiKeys.hash(key); never store the key itself")
    return keys


def _identity(digest: str, entry: object) -> Identity:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"API key {digest[:12]}...: expected an object with tenant, groups and name")
    tenant, groups, name = entry.get("tenant"), entry.get("groups", []), entry.get("name")
    if not isinstance(tenant, str):  # "" is allowed, but only said explicitly: see the module docstring
        raise ConfigError(f"API key {digest[:12]}... has no tenant",
                          hint='give it "tenant": "<name>", or "tenant": "" for documents ingested without a tenant')
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ConfigError(f"API key {digest[:12]}...: groups must be a list of strings")
    return Identity(tenant, tuple(groups), f"key:{name}" if isinstance(name, str) and name else f"key:{digest[:12]}")
