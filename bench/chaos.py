"""Faults under load (bench/load.py's mix at a fixed rate): for each, the timeline of errors, degraded answers and
p95 before, during and after, and the time the answers took to recover once the component was back.

    .venv/bin/python bench/chaos.py                                   # every fault, 4 requests a second
    .venv/bin/python bench/chaos.py --faults redis --outage 10 --rate 2

Faults (each in its own run, on one stack):
- redis: the Redis server stopped for --outage seconds, then started again (an empty one: no persistence);
- chroma: the Chroma server (`chroma run`) stopped, then started again on the same data;
- predictor: the model server killed (SIGKILL), then started again: a cold start;
- retrieve: the retrieve function killed (SIGKILL); `ragfn dev` starts it again, as Knative would;
- slow: the retrieve function answering later than the gateway waits for it (a TCP proxy adds the delay).

Targets (issue 16): no failed request (a 5xx or a dropped connection; a degraded answer counts as served), p95 with
the vector store down within 5% of before, and answers back to normal within 5 s of the component's return.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from load import Record, paraphrase_pairs, percentiles, prepare, python_faq, run_level
from stack import REPO, Stack, fresh_home, wait_http

# the degraded label each fault's answers should carry while it lasts
LABELS = {"redis": ("cache-unavailable",), "chroma": ("vector-store-unavailable",),
          "predictor": ("llm-unavailable", "cold-start"), "retrieve": ("retrieve-unavailable",),
          "slow": ("retrieve-unavailable",)}
SLOW_DELAY = 3.0  # seconds the proxy holds each request: above RAGFN_RETRIEVE_TIMEOUT_SECONDS below
RETRIEVE_TIMEOUT = 2.0


class Fault:
    """Injects one fault at `at` seconds and ends it `outage` seconds later, off the load's scheduling thread;
    `returned` is when the component answered again (for a kill, when `ragfn dev` had it back)."""

    def __init__(self, stack: Stack, name: str, at: float, outage: float) -> None:
        self.stack, self.name, self.at, self.outage = stack, name, at, outage
        self.injected: float | None = None
        self.cleared: float | None = None
        self.returned: float | None = None
        self._origin = 0.0
        self._state = "waiting"

    def tick(self, elapsed: float) -> None:
        if self._state == "waiting" and elapsed >= self.at:
            self._state = "injecting"
            self._origin = time.monotonic() - elapsed
            threading.Thread(target=self._run, daemon=True).start()

    def _now(self) -> float:
        return time.monotonic() - self._origin

    def _run(self) -> None:
        stack, name = self.stack, self.name
        self.injected = self._now()
        if name in ("redis", "chroma"):
            stack.stop(name)
        elif name == "predictor":
            stack.stop(name, kill=True)
        elif name == "retrieve":
            stack.kill_function("retrieve")
            time.sleep(0.2)
            wait_http(stack.function_url("retrieve"), ok=lambda r: r.status_code == 200)
            self.cleared = self.returned = self._now()
            return
        elif name == "slow":
            stack.slow(SLOW_DELAY)
        time.sleep(max(0.0, self.injected + self.outage - self._now()))
        self.cleared = self._now()
        if name == "slow":
            stack.slow(0.0)
        else:
            stack.start(name)
        self.returned = self._now()


def marked(record: Record, labels: tuple[str, ...]) -> bool:
    return bool(record.degraded) and any(label in record.degraded for label in labels)


def timeline(records: list[Record], labels: tuple[str, ...], seconds: float) -> list[dict]:
    buckets = []
    for second in range(int(seconds) + 1):
        inside = [r for r in records if second <= r.scheduled < second + 1 and r.route.startswith("ask")]
        latencies = sorted(r.latency_ms for r in inside if r.status)
        buckets.append({"t": second, "n": len(inside), "errors": sum(r.status == 0 or r.status >= 500 for r in inside),
                        "degraded": sum(marked(r, labels) for r in inside),
                        "p95": percentiles(latencies)["p95"] if latencies else None})
    return buckets


def recovered(labelled: list[float], returned: float, quiet: float = 5.0) -> tuple[float, int]:
    """(seconds from the component's return to the last labelled answer of the outage's burst, labelled answers
    after it): the burst ends at the first `quiet` seconds without a labelled answer. A straggler is one answer
    that timed out later (a first query of a tenant rebuilding a snapshot, say), not an outage still going on."""
    end = returned
    later = [t for t in labelled if t >= returned]
    for index, t in enumerate(later):
        if t - end > quiet:
            return round(end - returned, 2), len(later) - index
        end = t
    return round(end - returned, 2), 0


def experiment(stack: Stack, workload, name: str, rate: float, before: float, outage: float, after: float) -> dict:
    fault = Fault(stack, name, before, outage)
    level = run_level(stack, workload, rate, before + outage + after, on_tick=fault.tick)
    deadline = time.monotonic() + 60
    while fault.returned is None and time.monotonic() < deadline:  # a restart still under way
        time.sleep(0.2)
    labels = LABELS[name]
    asks = [r for r in level.records if r.route.startswith("ask")]
    failed = [r for r in level.records if r.status == 0 or r.status >= 500]

    def p95(start: float, end: float) -> float | None:
        values = sorted(r.latency_ms for r in asks if start <= r.scheduled < end and r.status)
        return percentiles(values)["p95"] if values else None

    hit = sorted(r.scheduled for r in asks if marked(r, labels))
    # every label the answers carried from the fault on: what the fault really caused, next to what it should
    seen = sorted({label for r in asks if r.degraded and r.scheduled >= before for label in r.degraded.split("+")})
    returned = fault.returned if fault.returned is not None else float("nan")
    recovery, stragglers = recovered(hit, returned)
    return {"fault": name, "labels": labels, "seen_labels": seen, "rate": rate, "injected_at": fault.injected,
            "cleared_at": fault.cleared,
            "returned_at": fault.returned, "requests": len(level.records), "failed": len(failed),
            "failed_examples": [r.error for r in failed[:3]], "degraded_answers": len(hit),
            "p95_before_ms": p95(0, before), "p95_during_ms": p95(before, returned),
            "p95_after_ms": p95(returned + 5, before + outage + after),
            "recovery_s": recovery, "stragglers": stragglers, "labelled_at": [round(t, 2) for t in hit],
            "timeline": timeline(level.records, labels, before + outage + after)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", default="redis,chroma,predictor,retrieve,slow")
    parser.add_argument("--rate", type=float, default=4.0)
    parser.add_argument("--before", type=float, default=20.0)
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--after", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=REPO / ".ragfn" / "bench" / "chaos")
    args = parser.parse_args()
    home = fresh_home(args.out)
    results = []
    with Stack(home, extra_env={"RAGFN_RETRIEVE_TIMEOUT_SECONDS": str(RETRIEVE_TIMEOUT)}) as stack:
        docs, questions = python_faq(stack)
        workload = prepare(stack, docs, questions, paraphrase_pairs())
        for name in args.faults.split(","):
            result = experiment(stack, workload, name, args.rate, args.before, args.outage, args.after)
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "timeline"}), file=sys.stderr, flush=True)
            time.sleep(5)  # breakers closed, caches refilled: the next experiment starts from a calm stack
    (args.out / "report.json").write_text(json.dumps(results, indent=2))
    print(json.dumps([{k: v for k, v in r.items() if k != "timeline"} for r in results], indent=2))


if __name__ == "__main__":
    main()
