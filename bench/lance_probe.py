"""Where a LanceDB dense or full-text query's time goes, on a table bench/scale.py built (not in CI).

    .venv/bin/python bench/lance_probe.py [.ragfn/bench/scale/lancedb/lancedb]

Times (p50 of the 40 real questions) dense search with each part of ragfn's filter, with and without the vector
index, with more or fewer probes, and full-text search, on the 1% tenant's table and the largest tenant's (each
tenant has a table of its own: ragfn.store.partitions).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def p50(samples: list[float]) -> float:
    return round(float(np.percentile(samples, 50)), 1)


def main() -> None:
    import lancedb

    from ragfn.retrieval.dense import Caller
    from ragfn.store.lance_tables import readable_by

    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / ".ragfn" / "bench" / "scale" / "lancedb" / "lancedb"
    db = lancedb.connect(str(folder))
    small_table, large_table = db.open_table("ragfn-scale.t.t19"), db.open_table("ragfn-scale.t.t1")
    vectors = np.load(folder.parent.parent / "question-vectors.npy")
    questions = json.loads((REPO / "bench" / "query_questions.json").read_text())["retrieve"]

    def dense(table, where: str | None, *, flat: bool = False, nprobes: int | None = None) -> float:
        samples = []
        for rnd in range(2):  # the first round warms the caches
            for vector in vectors:
                started = time.perf_counter()
                query = table.search(vector, vector_column_name="vector").distance_type("cosine")
                query = query.where(where, prefilter=True) if where else query
                query = query.bypass_vector_index() if flat else query
                query = query.nprobes(nprobes) if nprobes else query
                query.limit(10).select(["id", "_distance"]).to_list()
                samples += [(time.perf_counter() - started) * 1000] if rnd else []
        return p50(samples)

    def lexical(table, where: str) -> float:
        samples = []
        for rnd in range(2):
            for question in questions:
                started = time.perf_counter()
                (table.search(question, query_type="fts", fts_columns="text").where(where, prefilter=True)
                 .limit(50).select(["id", "_score"]).to_list())
                samples += [(time.perf_counter() - started) * 1000] if rnd else []
        return p50(samples)

    small, large = readable_by(Caller("t19", ("eng",))), readable_by(Caller("t1", ("eng",)))
    rows = {
        "dense, t19's table, no filter": dense(small_table, None),
        "dense, t19's table, tenant only": dense(small_table, "tenant = 't19'"),
        "dense, t19's table, tenant and groups": dense(small_table, small),
        "dense, t1's table, no filter": dense(large_table, None),
        "dense, t1's table, tenant and groups": dense(large_table, large),
        "dense, t1's table, tenant and groups, exact": dense(large_table, large, flat=True),
        "dense, t1's table, tenant and groups, nprobes 5": dense(large_table, large, nprobes=5),
        "dense, t1's table, tenant and groups, nprobes 50": dense(large_table, large, nprobes=50),
        "full text, t19's table, tenant and groups": lexical(small_table, small),
        "full text, t1's table, tenant and groups": lexical(large_table, large),
    }
    for name, ms in rows.items():
        print(f"{name:45s} p50 {ms:8.1f} ms")


if __name__ == "__main__":
    main()
