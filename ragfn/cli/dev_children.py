"""The processes `ragfn dev` runs, kept running the way a cluster keeps its pods: one that exits (a crash, a
`kill -9`, an out-of-memory kill) is started again with the same command, after 1 s, then 2, 4, ... up to 30 s
while it keeps failing; a run of a minute resets the wait. So a killed function comes back as Knative would bring
a pod back, and the Broker's retries carry its events over the gap.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("ragfn.dev")
FIRST_WAIT, LONGEST_WAIT, STEADY_SECONDS = 1.0, 30.0, 60.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str] | None
    cwd: str | None
    log_path: Path
    process: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    wait: float = FIRST_WAIT
    due: float | None = None  # when an exited child is started again
    restarts: int = 0


class Children:
    def __init__(self) -> None:
        self._children: list[Child] = []
        self._lock = threading.Lock()
        self._stopping = False

    def spawn(self, name: str, argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
              log_path: Path) -> subprocess.Popen:
        child = Child(name, argv, env, cwd, log_path, self._start(argv, env, cwd, log_path))
        with self._lock:
            self._children.append(child)
        return child.process

    @staticmethod
    def _start(argv: list[str], env: dict[str, str] | None, cwd: str | None, log_path: Path) -> subprocess.Popen:
        with log_path.open("ab") as out:  # the child keeps its own copy: a restart loop must not leak ours
            return subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)

    def supervise(self) -> list[str]:
        """Start again what exited and is due; the names started."""
        restarted = []
        with self._lock:
            if self._stopping:
                return restarted
            now = time.monotonic()
            for child in self._children:
                if child.process.poll() is None:
                    if now - child.started > STEADY_SECONDS:
                        child.wait = FIRST_WAIT
                    continue
                if child.due is None:
                    child.due = now + child.wait
                    log.warning("%s exited with %s; starting it again in %.0f s (its log: %s)", child.name,
                                child.process.returncode, child.wait, child.log_path)
                    continue
                if now >= child.due:
                    child.process = self._start(child.argv, child.env, child.cwd, child.log_path)
                    child.started, child.due, child.restarts = now, None, child.restarts + 1
                    child.wait = min(child.wait * 2, LONGEST_WAIT)
                    restarted.append(child.name)
        return restarted

    def run(self, stop: threading.Event, interval: float = 0.5) -> None:
        while not stop.wait(interval):
            self.supervise()

    def restarts(self) -> dict[str, int]:
        with self._lock:
            return {child.name: child.restarts for child in self._children}

    def stop_all(self) -> None:
        with self._lock:
            self._stopping = True
            children = list(self._children)
        for child in children:
            if child.process.poll() is None:
                child.process.terminate()
        for child in children:
            try:
                child.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.process.kill()  # a gunicorn worker whose master is gone exits by itself
                child.process.wait(timeout=10)
