"""Serving a WSGI app the way functions-framework serves a function: one gunicorn process, threaded worker.

functions-framework only serves functions it wraps itself, so the gateway (a Flask app of its own) gets the same
server settings here, read from the same variables: WORKERS processes (1), THREADS threads (4 per core), no worker
timeout unless CLOUD_RUN_TIMEOUT_SECONDS sets one (answers stream for as long as the model writes), no limit on the
request line, errors-only logging.
"""

from __future__ import annotations

import os

import gunicorn.app.base


class _Gunicorn(gunicorn.app.base.BaseApplication):
    def __init__(self, app, options: dict) -> None:
        self.app, self.options = app, options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self.app


def serve(app, host: str, port: int) -> None:
    """Run `app` until SIGINT/SIGTERM."""
    env = os.environ
    _Gunicorn(app, {"bind": f"{host}:{port}", "workers": int(env.get("WORKERS", 1)),
                    "threads": int(env.get("THREADS", (os.cpu_count() or 1) * 4)),
                    "timeout": int(env.get("CLOUD_RUN_TIMEOUT_SECONDS", 0)), "limit_request_line": 0,
                    "loglevel": env.get("GUNICORN_LOG_LEVEL", "error")}).run()
