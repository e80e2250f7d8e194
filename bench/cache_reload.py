"""What a semantic-cache lookup costs as a scope fills, when stores and lookups alternate (bench/soak.py's finding):
every store bumps the scope's generation, and the next lookup reads all of the scope's vectors from Redis again.

    .venv/bin/python bench/cache_reload.py --redis redis://127.0.0.1:6379/12 --ops 6000

Uses database 12 (flushed before and after) with the real RedisCache; vectors are random unit vectors (the cost
does not depend on them). Prints, per thousand operations, the mean time of one lookup-and-store pair and the
process's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import psutil
import redis

from ragfn.cache.redis_cache import CacheScope, RedisCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--ops", type=int, default=6000)
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis)
    client.flushdb()
    cache = RedisCache(client, prefix="bench-reload")
    scope = CacheScope("acme", (), "default", "embedder", "model", "v2")
    rng = np.random.default_rng(0)
    process = psutil.Process(os.getpid())
    rows, started = [], time.perf_counter()
    try:
        for i in range(args.ops):
            vector = rng.standard_normal(384).astype("float32")
            vector /= np.linalg.norm(vector)
            cache.lookup(f"question {i}?", scope, lambda _: vector)
            if i % 2 == 0:  # half the questions are new answers, stored
                cache.store(f"question {i}?", vector, scope, {"answer": "x" * 500, "citations": []}, [])
            if (i + 1) % 1000 == 0:
                now = time.perf_counter()
                rows.append({"ops": i + 1, "entries": (i + 2) // 2, "ms_per_op": round((now - started), 1),
                             "rss_mib": round(process.memory_info().rss / 2**20)})
                started = now
    finally:
        client.flushdb()
    for row in rows:  # seconds per thousand operations is milliseconds per operation
        print(json.dumps(row))


if __name__ == "__main__":
    main()
