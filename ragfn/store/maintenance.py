"""Scheduled index maintenance (functions/maintain): every collection in turn, within a time budget, with metrics.

A PingSource in the cluster (manifests/components/lancedb) and a timer in `ragfn dev` call it. On LanceDB it folds
new rows into the indexes, compacts, builds the vector index once a table is large enough and removes old versions.
On both backends it moves rows from before the table-per-tenant layout and sweeps orphaned rows (ragfn.store.orphans).
Collections the budget did not reach are taken first next time, so a large collection cannot starve the others.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from ragfn.core.config import Settings
from ragfn.core.errors import RagfnError
from ragfn.store.base import Index

log = logging.getLogger("ragfn.store.maintenance")


class MaintenanceMetrics:
    """ragfn_store_maintenance_*: served on the maintain function's /metrics."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.runs = Counter("ragfn_store_maintenance_runs", "maintenance runs by outcome (done: every collection; "
                            "partial: the budget ran out; failed: a collection could not be maintained)",
                            ["outcome"], registry=self.registry)
        self.seconds = Histogram("ragfn_store_maintenance_seconds", "time per collection and step",
                                 ["step"], registry=self.registry, buckets=(0.1, 0.5, 1, 5, 15, 60, 240, 900))
        self.unindexed = Gauge("ragfn_store_unindexed_rows", "rows searched flat because no index holds them yet, "
                               "summed over the collections of the last run", registry=self.registry)
        self.rows = Gauge("ragfn_store_rows", "chunk rows, summed over the collections of the last run",
                          registry=self.registry)
        self.versions_removed = Counter("ragfn_store_versions_removed", "old table versions removed",
                                        registry=self.registry)
        self.shared_rows_moved = Counter("ragfn_store_shared_rows_moved", "rows moved from a collection's shared "
                                         "table (before the table-per-tenant layout) to their tenants' tables",
                                         registry=self.registry)
        self.orphan_rows_removed = Counter("ragfn_store_orphan_rows_removed", "rows labelled older than their "
                                           "document's record, which no commit or delete had removed",
                                           registry=self.registry)


class Maintenance:
    def __init__(self, index: Index, settings: Settings, metrics: MaintenanceMetrics | None = None) -> None:
        self.index, self.settings, self.metrics = index, settings, metrics
        self._next_first: list[str] = []  # collections the last run's budget did not reach
        self._running = threading.Lock()

    def run(self) -> dict:
        """One pass; a ping that arrives while one runs (a slow run, a retried ping) returns at once."""
        if not self._running.acquire(blocking=False):
            return {"outcome": "busy"}
        try:
            return self._run()
        finally:
            self._running.release()

    def _run(self) -> dict:
        deadline = time.monotonic() + self.settings.maintenance_budget_seconds
        keep = timedelta(seconds=self.settings.lancedb_keep_versions_seconds)
        names = self.index.collections()
        order = [n for n in self._next_first if n in names] + [n for n in names if n not in self._next_first]
        reports, failed, skipped = [], [], []
        for name in order:
            if (reports or failed) and time.monotonic() >= deadline:  # one collection at least: every run progresses
                skipped.append(name)
                continue
            try:
                reports.append(self.index.maintain(name, keep_versions=keep, deadline=deadline))
            except RagfnError as exc:  # one collection's failure must not stop the others'
                log.warning("maintenance of %s failed: %s", name, exc)
                failed.append({"collection": name, "error": str(exc)})
        self._next_first = skipped
        outcome = "failed" if failed else "partial" if skipped else "done"
        self._observe(reports, outcome)
        log.info("maintenance %s: %d collections, %d not reached", outcome, len(reports), len(skipped))
        return {"outcome": outcome, "collections": reports, "failed": failed, "not_reached": skipped}

    def _observe(self, reports: list[dict], outcome: str) -> None:
        if self.metrics is None:
            return
        self.metrics.runs.labels(outcome).inc()
        self.metrics.rows.set(sum(r.get("rows", 0) for r in reports))
        self.metrics.unindexed.set(sum(r.get("unindexed_rows", 0) for r in reports))
        self.metrics.versions_removed.inc(sum(r.get("versions_removed", 0) for r in reports))
        self.metrics.shared_rows_moved.inc(sum(r.get("shared_rows_moved", 0) for r in reports))
        self.metrics.orphan_rows_removed.inc(sum(r.get("orphan_rows_removed", 0) for r in reports))
        for report in reports:
            for step in ("indexes", "optimize"):
                if f"{step}_seconds" in report:
                    self.metrics.seconds.labels(step).observe(report[f"{step}_seconds"])
