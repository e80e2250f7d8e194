"""Serve one ragfn function under functions-framework's own server (gunicorn), counting embedder calls."""

# .venv/bin/python bench/query_server.py functions/ask/main.py PORT runs what `functions-framework --source ...
# --target handle` runs (create_app, then create_server with debug off: gunicorn's threaded worker), plus what the
# bench needs to see inside: FastEmbedder.embed wrapped (here, not in ragfn) to count calls, reported at
# GET /__bench__/embed-calls, and with BENCH_PAGED_CHROMA_GET=1 the paged-read shim of query_shim.py.

from __future__ import annotations

import sys
import threading
from pathlib import Path

import flask
from functions_framework import create_app
from functions_framework._http import create_server

from ragfn.ingest.embedding import FastEmbedder

CALLS = {"calls": 0, "texts": 0}
_lock = threading.Lock()
_embed = FastEmbedder.embed


def counted_embed(self, texts):
    with _lock:
        CALLS["calls"] += 1
        CALLS["texts"] += len(texts)
    return _embed(self, texts)


def main() -> None:
    source, port = sys.argv[1], int(sys.argv[2])
    FastEmbedder.embed = counted_embed
    if Path(source).resolve().parent.name == "ask":  # the gateway is a Flask app of its own, not one function
        from ragfn.serve.gateway_app import create_app as gateway_app

        app = gateway_app()
    else:
        app = create_app(target="handle", source=str(Path(source).resolve()), signature_type="http")
    # a static rule outranks functions-framework's catch-all /<path:path> in werkzeug's routing
    app.add_url_rule("/__bench__/embed-calls", "bench_embed_calls", lambda: flask.jsonify(CALLS))
    # keepalive 120 s instead of gunicorn's 2 s: the bench's client holds one connection open, as a gateway's pool
    # or Knative's queue-proxy would, and must not see it closed while it runs an in-process turn in between
    create_server(app, False, keepalive=120).run("127.0.0.1", port)


if __name__ == "__main__":
    main()
