"""What the gateway knows of the predictor's warmth, and the background warm-ups that wake it.

A scaled-to-zero predictor takes seconds to minutes to answer its first request (Knative's activator holds the
request while a pod starts and loads the model). The gateway must not make a person wait on that, so it asks
`ready(wait)`: true at once when the predictor answered recently; otherwise one background warm-up probes it
(`POST /v1/warmup`, or `GET /models` on servers without that route) until it is ready, and the question is answered
from the extractive engine meanwhile, marked `cold-start`. A warm-up that gets nowhere for `give_up_seconds` sets
`gave_up`: the predictor is then reported down (`llm-unavailable`) rather than starting, until it answers again.
Nothing here raises: a failed probe only means "not yet".
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

import httpx

log = logging.getLogger("ragfn.warmup")

Probe = Literal["ready", "loading", "unreachable"]


def probe(http: httpx.Client, base_url: str, *, wait: float, timeout: float, headers: dict | None = None) -> Probe:
    """One look at an OpenAI-compatible server: ragfn's predictor reports loading; others count as ready on 200."""
    try:
        response = http.post(f"{base_url}/warmup", params={"wait": wait}, headers=headers,
                             timeout=httpx.Timeout(timeout + wait, connect=min(timeout, 3.0)))
        if response.status_code in (404, 405):  # not ragfn's predictor: being able to list models will do
            response = http.get(f"{base_url}/models", headers=headers, timeout=timeout)
    except httpx.TimeoutException:
        return "loading"  # in Knative, the activator holds requests while a pod starts
    except (httpx.HTTPError, RuntimeError):  # RuntimeError: the client was closed (shutdown) mid-probe
        return "unreachable"
    if response.status_code == 200:
        return "ready"
    return "loading" if response.status_code == 503 else "unreachable"


class PredictorWarmth:
    """`ready()` for the request path, `ping()` for chat opens and keep-alive; one warm-up thread at a time."""

    def __init__(self, http: httpx.Client, base_url: str, *, headers: dict | None = None,
                 fresh_seconds: float = 60.0, retry_seconds: float = 1.0, give_up_seconds: float = 600.0,
                 probe_wait: float = 10.0) -> None:
        self.http, self.base_url, self.headers = http, base_url.rstrip("/"), headers
        # Knative scales an idle predictor to zero after about a minute: older news of "ready" is not trusted
        self.fresh_seconds, self.retry_seconds, self.give_up_seconds = fresh_seconds, retry_seconds, give_up_seconds
        self.probe_wait = probe_wait
        self.state: Probe | Literal["unknown"] = "unknown"
        self._seen_ready = 0.0
        self._changed = threading.Condition()
        self._warming = False
        self._warm_started = 0.0
        self.gave_up = False

    def ready(self, wait: float = 0.0) -> bool:
        """True if the predictor answered within `fresh_seconds`, or becomes ready within `wait` seconds."""
        if self._fresh():
            return True
        self.ping()
        # only the first questions of a warm-up wait for it; once it has run `wait` seconds, the predictor is cold
        deadline = min(time.monotonic(), self._warm_started) + wait
        with self._changed:
            while not self._fresh() and self._warming and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(left)
        return self._fresh()

    def seen_ready(self) -> None:
        """A real request succeeded: the predictor is warm now."""
        with self._changed:
            self.state, self._seen_ready, self.gave_up = "ready", time.monotonic(), False
            self._changed.notify_all()

    def failed(self) -> None:
        """A real request failed: stop trusting the last "ready" and start warming."""
        with self._changed:
            self._seen_ready = 0.0
            if self.state == "ready":
                self.state = "unknown"
        self.ping()

    def ping(self) -> bool:
        """Start a background warm-up unless one runs or the predictor is fresh; True if one was started."""
        with self._changed:
            if self._warming or self._fresh():
                return False
            self._warming, self._warm_started = True, time.monotonic()
        threading.Thread(target=self._warm, name="ragfn-warmup", daemon=True).start()
        return True

    def describe(self) -> dict:
        return {"state": "ready" if self._fresh() else self.state, "warming": self._warming, "gave_up": self.gave_up}

    def _fresh(self) -> bool:
        return self._seen_ready > 0 and time.monotonic() - self._seen_ready < self.fresh_seconds

    def _warm(self) -> None:
        started = time.monotonic()
        try:
            while time.monotonic() - started < self.give_up_seconds:
                if self.http.is_closed:  # the process is shutting its clients down: nobody needs the answer
                    return
                result = probe(self.http, self.base_url, wait=self.probe_wait, timeout=5.0, headers=self.headers)
                if result == "ready":
                    log.info("predictor at %s is ready after %.1fs", self.base_url, time.monotonic() - started)
                    self.seen_ready()
                    return
                with self._changed:
                    self.state = result
                time.sleep(min(self.retry_seconds, max(0.0, self.give_up_seconds - (time.monotonic() - started))))
            self.gave_up = True
            log.warning("predictor at %s not ready after %.0fs; giving up until the next ping", self.base_url,
                        self.give_up_seconds)
        finally:
            with self._changed:
                self._warming = False
                self._changed.notify_all()
