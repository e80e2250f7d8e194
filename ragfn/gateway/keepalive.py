"""The gateway's keep-alive timer: warm-up pings of the predictor on a cron schedule (RAGFN_KEEPALIVE_SCHEDULE).

The same on a laptop and in the cluster (`manifests/base/functions/ask.yaml` sets working hours; the gateway keeps at
least one replica, so the timer always runs): a 5-field cron string, evaluated in the process's local time. It
replaced a PingSource posting to `/v1/warmup` once that route began to require a caller's credentials.
cronsim parses it (a small, maintained parser) rather than a hand-written one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from ragfn.core.errors import ConfigError

log = logging.getLogger("ragfn.keepalive")


def parse_schedule(expression: str):
    from cronsim import CronSim, CronSimError

    try:
        CronSim(expression, datetime.now())
    except CronSimError as exc:
        raise ConfigError(f"keep-alive schedule {expression!r} is not a cron expression: {exc}",
                          hint='5 fields, e.g. "*/5 8-18 * * 1-5" (every 5 minutes, 08:00-18:59, Monday-Friday)') \
            from exc
    return lambda after: next(CronSim(expression, after))


class KeepAlive:
    """Calls `ping` at every time the schedule names, in a daemon thread, until `stop()`."""

    def __init__(self, schedule: str, ping: Callable[[], object], *, now: Callable[[], datetime] = datetime.now) -> None:
        self.schedule, self.ping, self.now = schedule, ping, now
        self.next_after = parse_schedule(schedule)
        self.fired = 0
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> KeepAlive:
        self._thread = threading.Thread(target=self._run, name="ragfn-keepalive", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopped.is_set():
            now = self.now()
            due = self.next_after(now)
            if self._stopped.wait((due - now).total_seconds()):
                return
            try:
                self.ping()
                self.fired += 1
            except Exception:  # noqa: BLE001 - a failed ping must not end the schedule
                log.exception("keep-alive ping failed")
