"""Scheduled index maintenance against real LanceDB on a folder and real Chroma: new rows are searched before any
index holds them, maintenance folds them in, builds the vector index at its threshold and removes old versions,
within its budget; the maintain function serves it and its metrics."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from test_functions import client
from test_store import DIM, Vectors, write_document

from ragfn.core.config import load_settings
from ragfn.retrieval.dense import Caller, DenseRetriever
from ragfn.serve.runtime import Runtime
from ragfn.store.lance_tables import has_vector_index, unindexed_rows
from ragfn.store.maintenance import Maintenance, MaintenanceMetrics

pytestmark = pytest.mark.integration


@pytest.fixture
def lance(settings):
    return Runtime(settings.model_copy(update={"store": "lancedb", "lancedb_vector_index_rows": 1000})).index


def test_rows_written_after_the_indexes_are_found_at_once_and_maintenance_folds_them_in(lance):
    write_document(lance, "docs", "s3://a/first.md", ["the first document"], tenant="acme", groups=["*"])
    write_document(lance, "docs", "s3://a/second.md", ["a pelican in the second document"], tenant="acme",
                   groups=["*"], sequence=11)
    table = lance.chunk_table("docs", "acme")
    assert unindexed_rows(table) == 1  # the second write came after the first created the FTS index
    hits = lance.lexical_search("docs", "pelican", top_k=5, caller=Caller("acme"))
    assert [h.source for h in hits] == ["s3://a/second.md"]
    versions = len(table.list_versions())
    with pytest.warns(UserWarning, match="removes every version except the latest"):  # lance's, rightly: a test
        report = lance.maintain("docs", keep_versions=timedelta(0))
    assert report["unindexed_rows"] == 1 and unindexed_rows(table) == 0
    assert report["versions_removed"] > 0 and len(table.list_versions()) < versions
    assert [h.source for h in lance.lexical_search("docs", "pelican", top_k=5, caller=Caller("acme"))] \
        == ["s3://a/second.md"]


def test_the_vector_index_comes_at_its_threshold_and_filters_still_apply_before_the_top_k(lance):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(1200, DIM)).astype(np.float32)
    write_document(lance, "big", "s3://g/bulk.md", [f"bulk row {n}" for n in range(900)], tenant="globex",
                   groups=["hr"], vectors=vectors[:900])
    assert "vector_index_created" not in lance.maintain("big", keep_versions=timedelta(hours=1))  # 900 < 1,000
    write_document(lance, "big", "s3://g/more.md", [f"more row {n}" for n in range(300)], tenant="globex",
                   groups=["hr"], sequence=11, vectors=vectors[900:])
    write_document(lance, "big", "s3://a/small.md", ["small 0"], tenant="acme", groups=["*"], sequence=12,
                   vectors=vectors[:1])
    # readable by everyone in globex, and farther from the query than the hr rows: a filter after the top-k loses them
    mine = vectors[:3] + rng.normal(scale=0.5, size=(3, DIM)).astype(np.float32)
    write_document(lance, "big", "s3://g/mine.md", ["mine 0", "mine 1", "mine 2"], tenant="globex", groups=["*"],
                   sequence=13, vectors=mine)
    report = lance.maintain("big", keep_versions=timedelta(hours=1))
    assert report.get("vector_index_created") is True and report["tables"] == 2
    assert has_vector_index(lance.chunk_table("big", "globex"))  # 1,203 rows
    assert not has_vector_index(lance.chunk_table("big", "acme"))  # 1 row: searched flat
    hits = DenseRetriever(lance, Vectors()).search("q", collection="big", top_k=3, caller=Caller("globex"),
                                                   vector=vectors[0])
    assert sorted(h.text for h in hits) == ["mine 0", "mine 1", "mine 2"]


def test_a_run_keeps_to_its_budget_and_starts_next_time_where_it_stopped(settings):
    runtime = Runtime(settings.model_copy(update={"store": "lancedb", "maintenance_budget_seconds": 1e-9}))
    for n, name in enumerate(["a1", "b2", "c3"]):
        write_document(runtime.index, name, f"s3://x/{n}.md", ["text"], tenant=None, groups=["*"])
    maintenance = Maintenance(runtime.index, runtime.settings, MaintenanceMetrics())
    first = maintenance.run()
    assert first["outcome"] == "partial" and len(first["collections"]) == 1 and first["not_reached"] == ["b2", "c3"]
    second = maintenance.run()
    assert [r["collection"] for r in second["collections"]] == ["b2"]


def test_the_maintain_function_answers_a_ping_and_serves_its_metrics(ragfn_env, monkeypatch):
    monkeypatch.setenv("RAGFN_STORE", "lancedb")
    write_document(Runtime(load_settings()).index, "docs", "s3://a/1.md", ["one", "two"], tenant=None,
                   groups=["*"])
    app = client("maintain")
    headers, body = to_binary(CloudEvent({"type": "dev.knative.sources.ping", "source": "test"}, {}))
    response = app.post("/", headers=headers, data=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    summary = response.get_json()
    assert summary["outcome"] == "done" and summary["collections"][0]["rows"] == 2
    metrics = app.get("/metrics").get_data(as_text=True)
    assert 'ragfn_store_maintenance_runs_total{outcome="done"} 1.0' in metrics
    assert "ragfn_store_rows 2.0" in metrics


def test_chroma_has_nothing_to_maintain(settings):
    index = Runtime(settings).index
    write_document(index, "docs", "s3://a/1.md", ["one"], tenant=None, groups=["*"])
    assert index.maintain("docs", keep_versions=timedelta(hours=1)) == {
        "collection": "docs", "rows": 1, "tables": 1, "shared_rows_moved": 0, "orphan_rows_removed": 0,
        "skipped": "chroma"}


def test_the_dashboard_reads_the_store_metrics_by_the_names_served():
    import json
    from pathlib import Path

    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    metrics = MaintenanceMetrics()
    metrics.runs.labels("done").inc()
    metrics.seconds.labels("indexes").observe(1.0)
    served = {s.name for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())
              for s in f.samples}
    dashboard = json.loads((Path(__file__).resolve().parent.parent / "manifests" / "components" / "observability"
                            / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    wanted = {"ragfn_store_rows", "ragfn_store_unindexed_rows", "ragfn_store_maintenance_runs_total",
              "ragfn_store_maintenance_seconds_bucket", "ragfn_store_shared_rows_moved_total",
              "ragfn_store_orphan_rows_removed_total"}
    assert wanted <= served
    for name in wanted:
        assert any(name in expr for expr in exprs), f"no dashboard panel reads {name}"
