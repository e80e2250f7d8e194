"""What the predictor lets in: its own key on every route but health and metrics, and the address it listens on.

With RAGFN_LLM_API_KEY set (the manifests always set it, from the `ragfn-llm` Secret the gateway's client reads
too), every request needs `Authorization: Bearer <key>`: the OpenAI routes, `/v1/warmup` and KServe's own v1/v2
inference routes alike, since those reach the same model. Liveness, readiness and `/metrics` stay open for probes
and scrapers; they reveal only whether the model is loaded.
"""

from __future__ import annotations

import hmac
import re

OPEN_PATHS = re.compile(r"/|/metrics|/v2|/v2/health/(?:live|ready)|/v1/models/[^/:]+|/v2/models/[^/]+/ready")


def require_key(app, key: str) -> None:
    """Refuse (401, OpenAI's error shape) any request to `app` outside OPEN_PATHS without the key."""
    from fastapi.responses import JSONResponse

    expected = key.encode()

    @app.middleware("http")
    async def check_key(request, call_next):
        if OPEN_PATHS.fullmatch(request.url.path):
            return await call_next(request)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected):
            return await call_next(request)
        return JSONResponse({"error": {"message": "missing or wrong API key", "type": "invalid_request_error",
                                       "code": "Unauthorized"}}, status_code=401,
                            headers={"WWW-Authenticate": 'Bearer realm="ragfn-predictor"'})


def bind_to(host: str) -> None:
    """Make KServe's REST server listen on `host`.

    KServe 0.21's RESTServer passes host="0.0.0.0" to uvicorn and has no option for it, so `ragfn dev` (which must
    stay on loopback) replaces the class ModelServer builds with one that sets the host before uvicorn binds.
    tests/test_predictor.py checks the listening address, so a KServe that changes this fails there."""
    from kserve import model_server
    from kserve.protocol.rest.server import RESTServer

    class BoundRESTServer(RESTServer):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.config.host = host  # read when uvicorn binds, after this

    model_server.RESTServer = BoundRESTServer
