"""What a semantic-cache lookup costs as a scope fills, when stores and lookups alternate (bench/soak.py's finding),
with the change log (a process applies only the entries changed since its generation) against the baseline of a
full read of the scope after every change (the change log disabled, as before it existed), in the same run.

    .venv/bin/python bench/cache_reload.py --redis redis://127.0.0.1:6379/12 --ops 6000

Uses database 12 (flushed before and after) with the real RedisCache; vectors are random unit vectors (the cost
does not depend on them). Prints, per thousand operations and for each way, the mean time of one lookup-and-store
pair and the process's memory, then the ratio at the largest scope.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import psutil
import redis

from ragfn.cache import redis_cache
from ragfn.cache.redis_cache import CacheScope, RedisCache


def run(client: redis.Redis, ops: int, log_span: int) -> list[dict]:
    client.flushdb()
    saved, redis_cache.LOG_SPAN = redis_cache.LOG_SPAN, log_span  # 0: every change reads the whole scope again
    cache = RedisCache(client, prefix="bench-reload")
    scope = CacheScope("acme", (), "default", "embedder", "model", "v2")
    rng = np.random.default_rng(0)
    process = psutil.Process(os.getpid())
    rows, started = [], time.perf_counter()
    try:
        for i in range(ops):
            vector = rng.standard_normal(384).astype("float32")
            vector /= np.linalg.norm(vector)
            cache.lookup(f"question {i}?", scope, lambda _: vector)
            if i % 2 == 0:  # half the questions are new answers, stored
                cache.store(f"question {i}?", vector, scope, {"answer": "x" * 500, "citations": []}, [])
            if (i + 1) % 1000 == 0:
                now = time.perf_counter()
                rows.append({"log_span": log_span, "ops": i + 1, "entries": (i + 2) // 2,
                             "ms_per_op": round(now - started, 2),  # seconds per thousand is ms per operation
                             "rss_mib": round(process.memory_info().rss / 2**20)})
                started = now
    finally:
        redis_cache.LOG_SPAN = saved
        client.flushdb()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--ops", type=int, default=6000)
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis)
    logged = run(client, args.ops, redis_cache.LOG_SPAN)
    baseline = run(client, args.ops, 0)
    for row in baseline + logged:
        print(json.dumps(row))
    print(json.dumps({"entries": logged[-1]["entries"],
                      "full_read_over_log": round(baseline[-1]["ms_per_op"] / logged[-1]["ms_per_op"], 1)}))


if __name__ == "__main__":
    main()
