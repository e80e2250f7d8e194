"""OIDC tokens from someone else's issuer: Google's (Pub/Sub pushes), a cluster's service-account issuer (Knative
event deliveries), `ragfn dev`'s local broker.

`SigningKeys` holds an issuer's public keys (its JWKS), fetched when first needed, kept `lifespan` seconds, and
fetched again early when a token names a key it does not hold (the issuer rotated). Any fetch, failed or not, is
tried again only after REFETCH_SECONDS, so neither tokens with made-up key ids nor an issuer that is down make it
hammer the issuer; a failed refresh keeps the keys it had. Each key verifies only with its own algorithm (an RSA
key never takes an ES256 token). PyJWT's PyJWKClient fetches with fixed headers; the Kubernetes API server wants
the pod's current projected token, which the kubelet renews, so the fetch is ours (httpx, at most MAX_DOCUMENT_BYTES)
and PyJWT parses and verifies.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from ragfn.core.auth import Unauthorized
from ragfn.core.errors import ConfigError, Unavailable

REFETCH_SECONDS = 30.0
LEEWAY_SECONDS = 30.0
MAX_DOCUMENT_BYTES = 1024 * 1024  # a JWKS or an OpenID configuration is a few KB
ALGORITHMS = ("RS256", "ES256", "ES384", "PS256")  # what cluster issuers and Google sign with; never "none" or HS*


class SigningKeys:
    """The JWKS at `url`: https:// or http:// (sent `Authorization: Bearer` with the contents of `token_file` when
    given, verified against `ca_file` when given), or a file path (a JWKS copied into a ConfigMap)."""

    def __init__(self, url: str, *, token_file: Path | None = None, ca_file: Path | None = None,
                 lifespan: float = 300.0, timeout: float = 5.0) -> None:
        self.url, self.token_file, self.ca_file = url, token_file, ca_file
        self.lifespan, self.timeout = lifespan, timeout
        self._lock = threading.Lock()
        self._keys: dict[str | None, object] = {}  # kid -> PyJWK
        self._fetched = float("-inf")  # the last good fetch
        self._tried = float("-inf")  # the last attempt, good or not

    def key_for(self, token: str):
        """The PyJWK that `token`'s header names; Unauthorized for a key the issuer does not publish."""
        import jwt

        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"malformed token: {exc}") from exc
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("malformed token: its kid is not a string")
        with self._lock:
            now = time.monotonic()
            known = kid in self._keys or (kid is None and len(self._keys) == 1)
            stale = now - self._fetched > self.lifespan or not known
            if stale and now - self._tried > REFETCH_SECONDS:
                self._tried = now
                try:
                    self._keys, self._fetched = self._fetch(), now
                except (Unavailable, ConfigError):
                    if not self._keys:  # nothing to fall back on
                        raise
            keys = self._keys
        if kid in keys:
            return keys[kid]
        if kid is None and len(keys) == 1:  # an issuer with one key may leave kid out
            return next(iter(keys.values()))
        raise Unauthorized("the token is signed with a key its issuer does not publish",
                           hint=f"the issuer's keys are at {self.url}")

    def _fetch(self) -> dict[str | None, object]:
        import jwt

        try:
            document = json.loads(self._read())
            found = jwt.PyJWKSet.from_dict(document)
        except (ValueError, jwt.PyJWKSetError) as exc:
            raise Unavailable(f"the signing keys at {self.url} are not a JWKS: {exc}") from exc
        return {key.key_id: key for key in found.keys if key.algorithm_name in ALGORITHMS}

    def _read(self) -> bytes:
        if "://" not in self.url:
            try:
                return Path(self.url).read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read the signing keys file {self.url}: {exc.strerror or exc}") from exc
        headers = {}
        if self.token_file is not None:
            try:
                headers["Authorization"] = f"Bearer {self.token_file.read_text().strip()}"
            except OSError as exc:
                raise ConfigError(f"cannot read the token for {self.url} from {self.token_file}: "
                                  f"{exc.strerror or exc}", hint="mount the projected service-account token there"
                                  ) from exc
        verify: ssl.SSLContext | bool = True
        if self.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with httpx.stream("GET", self.url, headers=headers, timeout=self.timeout, verify=verify) as response:
                if response.status_code != 200:
                    raise Unavailable(f"{self.url} answered {response.status_code} for the signing keys",
                                      hint="a Kubernetes API server needs the role "
                                           "system:service-account-issuer-discovery"
                                      if response.status_code in (401, 403) else None)
                body = bytearray()
                for part in response.iter_bytes():
                    body += part
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise Unavailable(f"{self.url} sent more than {MAX_DOCUMENT_BYTES} bytes of signing keys")
                return bytes(body)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot fetch the signing keys from {self.url}: {exc}") from exc


def discovered_issuer(jwks_url: str, *, token_file: Path | None = None, ca_file: Path | None = None) -> str:
    """The `issuer` of the OpenID configuration served beside `jwks_url` (at its origin's /.well-known path), as
    the Kubernetes API server and `ragfn dev`'s broker serve it."""
    parts = urlsplit(jwks_url)
    document = SigningKeys(f"{parts.scheme}://{parts.netloc}/.well-known/openid-configuration",
                           token_file=token_file, ca_file=ca_file)._read()
    try:
        issuer = json.loads(document)["issuer"]
    except (ValueError, KeyError, TypeError) as exc:
        raise Unavailable(f"no issuer in the OpenID configuration beside {jwks_url}") from exc
    if not isinstance(issuer, str) or not issuer:
        raise Unavailable(f"no issuer in the OpenID configuration beside {jwks_url}")
    return issuer


def verified_claims(token: str, keys: SigningKeys, *, audience: str, issuer: str | Iterable[str],
                    require: Iterable[str] = ("exp", "iat", "aud", "iss", "sub"), what: str = "token",
                    hint: str | None = None, algorithms: Iterable[str] = ALGORITHMS) -> dict:
    """The claims of `token` once its signature (with the key's own algorithm, one of `algorithms`), issuer,
    audience and lifetime check out; Unauthorized otherwise, naming the failed check (PyJWT never puts the token in
    its messages)."""
    import jwt

    try:
        key = keys.key_for(token)
    except Unauthorized as exc:
        raise Unauthorized(f"{what}: {exc.message}", hint=exc.hint or hint) from exc
    if key.algorithm_name not in algorithms:
        raise Unauthorized(f"invalid {what}: its key is for {key.algorithm_name}, not {', '.join(algorithms)}",
                           hint=hint)
    try:
        return jwt.decode(token, key, algorithms=[key.algorithm_name], audience=audience,
                          issuer=issuer if isinstance(issuer, str) else list(issuer), leeway=LEEWAY_SECONDS,
                          options={"require": list(require)})
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized(f"the {what} has expired", hint=hint) from exc
    except (jwt.InvalidTokenError, TypeError, ValueError) as exc:  # TypeError: a key PyJWT cannot use
        raise Unauthorized(f"invalid {what}: {exc}", hint=hint) from exc
