"""Where a LanceDB dense or full-text query's time goes, on a table bench/scale.py built (not in CI).

    .venv/bin/python bench/lance_probe.py [.ragfn/bench/scale/lancedb/lancedb]

Times (p50 of the 40 real questions) dense search with each part of ragfn's filter, with and without the vector
index, with more or fewer probes, and full-text search for the 1% and the largest tenant.
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
    table = lancedb.connect(str(folder)).open_table("ragfn-scale")
    vectors = np.load(folder.parent.parent / "question-vectors.npy")
    questions = json.loads((REPO / "bench" / "query_questions.json").read_text())["retrieve"]

    def dense(where: str | None, *, flat: bool = False, nprobes: int | None = None) -> float:
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

    def lexical(where: str) -> float:
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
        "dense, no filter": dense(None),
        "dense, tenant t19 only": dense("tenant = 't19'"),
        "dense, t19 and groups": dense(small),
        "dense, t19 and groups, exact (no index)": dense(small, flat=True),
        "dense, t19 and groups, nprobes 5": dense(small, nprobes=5),
        "dense, t19 and groups, nprobes 50": dense(small, nprobes=50),
        "dense, t1 and groups": dense(large),
        "dense, t1 and groups, exact (no index)": dense(large, flat=True),
        "full text, t19 and groups": lexical(small),
        "full text, t1 and groups": lexical(large),
    }
    for name, ms in rows.items():
        print(f"{name:45s} p50 {ms:8.1f} ms")


if __name__ == "__main__":
    main()
