"""A fresh retrieve replica for bench/scale.py: its settings from RAGFN_* variables, as a function's would be.

    scale_probe.py COLLECTION VECTORS.npy TENANT GROUPS

Prints one JSON line: seconds from process start to the first hybrid answer (imports, connecting, and whatever the
backend loads first: Chroma's BM25 snapshot, LanceDB's index metadata), then resident memory after every question
has been asked once in each mode.
"""

import time

STARTED = time.perf_counter()

import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
QUESTIONS = json.loads((REPO / "bench" / "query_questions.json").read_text())["retrieve"]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    from ragfn.core.config import load_settings
    from ragfn.retrieval.dense import Caller
    from ragfn.serve.runtime import Runtime

    collection, vectors_path, tenant, groups = sys.argv[1:5]
    vectors = np.load(vectors_path)
    caller = Caller(tenant, tuple(g for g in groups.split(",") if g))
    runtime = Runtime(load_settings())
    runtime.retriever.search(QUESTIONS[0], mode="hybrid", collection=collection, caller=caller, vector=vectors[0])
    cold = time.perf_counter() - STARTED
    after_first = rss_mib()
    for mode in ("dense", "lexical", "hybrid"):
        for question, vector in zip(QUESTIONS, vectors, strict=True):
            runtime.retriever.search(question, mode=mode, collection=collection, caller=caller, vector=vector)
    print(json.dumps({"cold_start_to_first_hybrid_s": round(cold, 2), "rss_after_first_mib": after_first,
                      "rss_after_all_mib": rss_mib(),
                      "max_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main()
