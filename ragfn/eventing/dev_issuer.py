"""`ragfn dev`'s stand-in for a cluster's service-account issuer: it signs the local broker's deliveries as
Knative's sender identity does, so the dev functions verify tokens exactly as they do in a cluster.

A key pair made when `ragfn dev` starts (ES256, never written to disk); the broker serves its public half at
/openid/v1/jwks and the issuer at /.well-known/openid-configuration, the paths of the Kubernetes API server. Tokens
name `system:serviceaccount:ragfn-dev:<identity>` with the identities Knative would use, and live five minutes.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid

from ragfn.eventing.delivery_auth import subject

NAMESPACE = "ragfn-dev"
TOKEN_SECONDS = 300


class DevIssuer:
    def __init__(self, issuer: str, *, token_seconds: int = TOKEN_SECONDS) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec
        from jwt.algorithms import ECAlgorithm

        self.issuer, self.token_seconds = issuer, token_seconds
        self._key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        self.kid = hashlib.sha256(f"{jwk['x']}.{jwk['y']}".encode()).hexdigest()[:16]
        self._jwk = jwk | {"kid": self.kid, "use": "sig", "alg": "ES256"}
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}

    def token(self, identity: str, audience: str) -> str:
        """A token for service account `identity` of NAMESPACE, for `audience`; reused while it has most of its life
        left, as Knative caches the tokens it requests."""
        import jwt

        with self._lock:
            cached = self._tokens.get((identity, audience))
            if cached and cached[1] - time.time() > self.token_seconds / 2:
                return cached[0]
            now = int(time.time())
            claims = {"iss": self.issuer, "sub": subject(NAMESPACE, identity), "aud": audience, "iat": now,
                      "nbf": now, "exp": now + self.token_seconds, "jti": uuid.uuid4().hex}
            token = jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.kid})
            self._tokens[(identity, audience)] = (token, now + self.token_seconds)
            return token

    def public_key(self):
        return self._key.public_key()

    def jwks(self) -> dict:
        return {"keys": [self._jwk]}

    def openid_configuration(self) -> dict:
        return {"issuer": self.issuer, "jwks_uri": f"{self.issuer}/openid/v1/jwks", "response_types_supported":
                ["id_token"], "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["ES256"]}
