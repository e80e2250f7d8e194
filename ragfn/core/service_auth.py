"""Identity between ragfn's own services: the gateway vouches for the caller it authenticated.

The gateway authenticates people (ragfn.core.auth) and then calls retrieve and cache-check, which any pod in the
cluster can reach. So each call carries a short-lived HS256 token the gateway signs: the caller's tenant and groups,
the callee as audience, an expiry of a minute. The callee takes the caller from a valid token only, never from the
request body, and answers 401 without one.

Key file (RAGFN_SERVICE_KEYS_FILE, a mounted Secret): one key per line, each at least 32 bytes; blank lines and lines
starting with `#` are skipped. The first key signs; every key verifies, picked by the token's `kid` (a digest of
the key, never the key). A process reads the file again when it changes (looked at every RELOAD_SECONDS), so a
rotation needs no restart:
1. add the new key as a second line, and wait until every pod has it (a Secret volume updates within a minute or
   two);
2. move it to the first line: gateways sign with it, and every callee already accepts it;
3. after TOKEN_SECONDS more, remove the old key.
A file that becomes unreadable or empty keeps the keys last read (and logs it), so a half-written Secret update
cannot lock the services out.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from ragfn.core.auth import MIN_JWT_SECRET_BYTES, Identity, Unauthorized, bearer
from ragfn.core.errors import ConfigError

log = logging.getLogger("ragfn.service_auth")
ISSUER = "ragfn-gateway"
TOKEN_SECONDS = 60.0
RELOAD_SECONDS = 10.0  # how often a process reads the key file again (a module setting: tests shorten it)
LEEWAY_SECONDS = 10.0  # clock skew between the gateway's node and the callee's
_HOW = "the gateway sends `Authorization: Bearer <token>`; give both the same RAGFN_SERVICE_KEYS_FILE"


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"ragfn-service-key:" + key).hexdigest()[:16]


class ServiceKeys:
    """The keys of RAGFN_SERVICE_KEYS_FILE, read again every RELOAD_SECONDS (a few bytes) and used when changed."""

    def __init__(self, path: str | Path, *, token_seconds: float = TOKEN_SECONDS) -> None:
        self.path, self.token_seconds = Path(path), token_seconds
        self._lock = threading.Lock()
        self._raw = b""
        self._keys = self._parse(self._read())  # at start-up a missing or bad file is a ConfigError
        self._checked = time.monotonic()

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read RAGFN_SERVICE_KEYS_FILE={self.path}: {exc.strerror or exc}",
                              hint="mount the ragfn-service-keys Secret there (`ragfn dev` makes one itself)") from exc

    def _parse(self, raw: bytes) -> list[bytes]:
        setting = f"RAGFN_SERVICE_KEYS_FILE={self.path}"
        keys = [line.strip() for line in raw.splitlines() if line.strip() and not line.strip().startswith(b"#")]
        if not keys:
            raise ConfigError(f"{setting} holds no key", hint="one key per line, e.g. "
                              "`python -c 'import secrets; print(secrets.token_hex(32))'`")
        short = [n + 1 for n, key in enumerate(keys) if len(key) < MIN_JWT_SECRET_BYTES]
        if short:
            raise ConfigError(f"{setting}: key {short[0]} is shorter than {MIN_JWT_SECRET_BYTES} bytes",
                              hint="use random keys, e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`")
        self._raw = raw
        return keys

    def _current(self) -> list[bytes]:
        with self._lock:
            if time.monotonic() - self._checked >= RELOAD_SECONDS:
                self._checked = time.monotonic()
                try:
                    raw = self._read()
                    if raw != self._raw:
                        self._keys = self._parse(raw)
                        log.info("service keys reloaded from %s: %d key(s)", self.path, len(self._keys))
                except ConfigError as exc:
                    log.warning("service keys: keeping the %d key(s) last read: %s", len(self._keys), exc)
            return self._keys

    def sign(self, audience: str, tenant: str | None, groups: tuple[str, ...] | list[str], *,
             subject: str = "") -> str:
        import jwt

        key = self._current()[0]
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": audience, "iat": now, "exp": now + int(self.token_seconds),
                  "tenant": tenant or "", "groups": list(groups), "sub": subject}
        return jwt.encode(claims, key, algorithm="HS256", headers={"kid": key_id(key)})

    def verify(self, headers: Mapping[str, str], audience: str) -> Identity:
        """The caller a valid `Authorization: Bearer` token for `audience` names; Unauthorized otherwise."""
        import jwt

        token = bearer(headers)
        if not token:
            raise Unauthorized("missing service token", hint=_HOW)
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"malformed service token: {exc}", hint=_HOW) from exc
        key = next((k for k in self._current() if key_id(k) == kid), None)
        if key is None:
            raise Unauthorized("the service token is signed with a key this service does not hold",
                               hint="a key rotation must add the new key everywhere before signing with it")
        try:
            claims = jwt.decode(token, key, algorithms=["HS256"], audience=audience, issuer=ISSUER,
                                leeway=LEEWAY_SECONDS, options={"require": ["exp", "iat", "aud", "iss"]})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("the service token has expired", hint="check the clocks of the gateway's and this "
                               "service's nodes") from exc
        except jwt.InvalidTokenError as exc:  # PyJWT names the failed check, never the token
            raise Unauthorized(f"invalid service token: {exc}", hint=_HOW) from exc
        if claims["exp"] - claims["iat"] > self.token_seconds + LEEWAY_SECONDS:
            raise Unauthorized("the service token claims a longer life than this service accepts", hint=_HOW)
        tenant, groups = claims.get("tenant"), claims.get("groups")
        if not isinstance(tenant, str) or not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise Unauthorized("the service token lacks tenant and groups", hint=_HOW)
        subject = claims.get("sub")
        return Identity(tenant, tuple(groups), subject if isinstance(subject, str) and subject else "service")
