"""Latency helpers for bench/query.py: percentiles, interleaved timing rounds, and a function served over HTTP."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def summary(samples_ms: list[float]) -> dict:
    if not samples_ms:
        return {"n": 0}
    a = np.asarray(samples_ms)
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p95_ms": round(float(np.percentile(a, 95)), 3), "mean_ms": round(float(a.mean()), 3),
            "min_ms": round(float(a.min()), 3), "max_ms": round(float(a.max()), 3)}


def interleaved(systems: dict[str, Callable[[object], object]], items: list, reps: int, seconds: float,
                label: str) -> dict[str, dict]:
    """Each item goes to every system in turn, the order rotating from item to item, `reps` times over, so a
    busy moment of the (shared, 2-core) machine lands on all systems alike. Stops early at the time budget."""
    names, samples, load = list(systems), {name: [] for name in systems}, os.getloadavg()[0]
    deadline, turn, stopped = time.monotonic() + seconds, 0, False
    for _ in range(reps):
        for item in items:
            for name in names[turn % len(names):] + names[:turn % len(names)]:
                started = time.perf_counter_ns()
                systems[name](item)
                samples[name].append((time.perf_counter_ns() - started) / 1e6)
            turn += 1
            if time.monotonic() > deadline:
                stopped = True
                break
        if stopped:
            break
    return _summaries(samples, stopped, load, label)


def in_blocks(setups: dict[str, Callable[[], None]], call: Callable[[object], object], items: list, reps: int,
              seconds: float, label: str) -> dict[str, dict]:
    """Like `interleaved`, for settings a process would make once (thread counts): each setting is made, then
    all items are timed under it; the order of the settings rotates from repetition to repetition."""
    names, samples, load = list(setups), {name: [] for name in setups}, os.getloadavg()[0]
    deadline, stopped = time.monotonic() + seconds, False
    for rep in range(reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            setups[name]()
            for item in items:
                started = time.perf_counter_ns()
                call(item)
                samples[name].append((time.perf_counter_ns() - started) / 1e6)
        if time.monotonic() > deadline:
            stopped = rep < reps - 1
            break
    return _summaries(samples, stopped, load, label)


def _summaries(samples: dict[str, list[float]], stopped: bool, load: float, label: str) -> dict[str, dict]:
    # the machine is shared: the load average says how busy it was while these samples were taken
    extra = {"stopped_at_time_budget": stopped, "loadavg_1m": [round(load, 2), round(os.getloadavg()[0], 2)]}
    result = {name: summary(s) | extra for name, s in samples.items()}
    log(f"   {label}: " + ", ".join(f"{n} p50 {r['p50_ms']:.2f} ms" for n, r in result.items() if r["n"])
        + f" (load {load:.1f} -> {os.getloadavg()[0]:.1f})" + (" (time budget reached)" if stopped else ""))
    return result


class Served:
    """A function under functions-framework's gunicorn server, in a subprocess this object started and stops.
    Requests go over one keep-alive connection, as a gateway's connection pool would send them."""

    def __init__(self, source: str, port: int, env: dict[str, str], log_file: Path) -> None:
        self.port, self.log_file = port, log_file
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "bench" / "query_server.py"), source, str(port)],
            env={k: v for k, v in os.environ.items() if not k.startswith("RAGFN_")} | env, cwd=REPO, stdout=log_file.open("w"), stderr=subprocess.STDOUT)
        self.connection: http.client.HTTPConnection | None = None
        self.reconnects = 0
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.get("/")[0] == 200:
                    return
            except OSError:
                self.connection = None
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{source} did not start; see {log_file}:\n{log_file.read_text()[-2000:]}")
            time.sleep(0.2)

    def _request(self, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, dict]:
        for attempt in (1, 2):
            reused = self.connection is not None
            if self.connection is None:
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                data = response.read()
                break
            except (OSError, http.client.HTTPException):
                self.connection.close()
                self.connection = None
                if not reused or attempt == 2:  # a kept-alive connection the server closed: one retry, as pools do
                    raise
                self.reconnects += 1
        return response.status, json.loads(data) if data else {}

    def get(self, path: str) -> tuple[int, dict]:
        return self._request("GET", path, None, {})

    def post(self, path: str, payload: dict, headers: dict | None = None) -> dict:
        status, body = self._request("POST", path, json.dumps(payload).encode(),
                                     {"Content-Type": "application/json"} | (headers or {}))
        if status != 200:
            raise RuntimeError(f"POST {path} answered {status}: {body}")
        return body

    def embed_calls(self) -> int:
        return self.get("/__bench__/embed-calls")[1]["calls"]

    def stop(self) -> None:
        if self.connection is not None:
            self.connection.close()
        if self.process.poll() is None:
            self.process.terminate()  # gunicorn's arbiter stops its worker on SIGTERM
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
