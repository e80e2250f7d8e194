"""What a tenant filter costs Chroma in one shared collection, against the tenant's rows in a collection of their own
(not in CI; about 3 minutes on 2 cores).

    .venv/bin/python bench/chroma_filter.py [--rows 100000]

Synthetic rows (random 384-d vectors; no text is searched) over 100 Zipf-sized tenants, a third of them in group
eng; the mean of 5 queries after one warm-up, top 10, for a tenant of about 1% of the rows.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter

import numpy as np


def main() -> None:
    import chromadb

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="chroma-filter-")
    try:
        client = chromadb.PersistentClient(folder)
        shared = client.get_or_create_collection("shared", metadata={"hnsw:space": "cosine"}, embedding_function=None)
        rng = np.random.default_rng(0)
        tenants = [f"t{min(int(rng.zipf(1.3)), 100)}" for _ in range(args.rows)]
        for start in range(0, args.rows, 5000):
            ids = range(start, min(start + 5000, args.rows))
            shared.add(ids=[str(i) for i in ids], embeddings=rng.normal(size=(len(ids), 384)).astype(np.float32),
                       documents=["x"] * len(ids),
                       metadatas=[{"tenant": tenants[i], "groups": ["*"] if i % 3 else ["eng"]} for i in ids])
        counts = Counter(tenants)
        small = min(counts, key=lambda t: abs(counts[t] - args.rows / 100))
        own = client.get_or_create_collection("owntenant", metadata={"hnsw:space": "cosine"}, embedding_function=None)
        mine = [i for i in range(args.rows) if tenants[i] == small]
        own.add(ids=[str(i) for i in mine], embeddings=rng.normal(size=(len(mine), 384)).astype(np.float32),
                documents=["x"] * len(mine), metadatas=[{"tenant": small, "groups": ["*"]} for _ in mine])
        query = rng.normal(size=384).astype(np.float32)
        groups = {"$or": [{"groups": {"$contains": "*"}}, {"groups": {"$contains": "eng"}}]}

        def ms(collection, where) -> float:
            collection.query(query_embeddings=[query], n_results=10, where=where)
            started = time.perf_counter()
            for _ in range(5):
                collection.query(query_embeddings=[query], n_results=10, where=where)
            return round((time.perf_counter() - started) / 5 * 1000, 1)

        print(f"{args.rows:,} rows; tenant {small} holds {counts[small]:,}")
        for name, collection, where in (
                ("shared collection, no filter", shared, None),
                ("shared collection, tenant", shared, {"tenant": small}),
                ("shared collection, tenant and groups", shared, {"$and": [{"tenant": small}, groups]}),
                ("the tenant's own collection, no filter", own, None),
                ("the tenant's own collection, groups", own, groups)):
            print(f"{name:42s} {ms(collection, where):8.1f} ms")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
