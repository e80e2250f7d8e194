"""The readable table of bench/query.py's results, and which ragfn was measured."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git_state() -> dict:
    """Which ragfn was measured: the commit, and any ragfn/ or functions/ files changed on top of it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], check=False, cwd=REPO, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted": git("status", "--porcelain", "--", "ragfn", "functions").splitlines()}


def table(r: dict) -> str:
    rows, f = [], lambda d: f"{d['p50_ms']:8.2f} {d['p95_ms']:8.2f} {d['n']:5d}" if d.get("n") else "       -"
    rows.append(f"{'measurement':<58} {'p50 ms':>8} {'p95 ms':>8} {'n':>5}")
    for size, res in r["retrieval"].items():
        for name, d in res.items():
            rows.append(f"{f'{int(size):,} chunks, in-process: {name}':<58} {f(d)}")
        for name, d in r["http_retrieve"][size].items():
            if isinstance(d, dict):
                rows.append(f"{f'{int(size):,} chunks, retrieve function: {name}':<58} {f(d)}")
    c, g = r["cache"], r["gptcache"]
    for name in ("ask_http_exact", "ask_http_semantic", "gateway_cache_stage_exact", "gateway_cache_stage_semantic",
                 "ragfn_lookup_exact", "ragfn_lookup_semantic"):
        rows.append(f"{f'ragfn cache: {name}':<58} {f(c[name])}")
    for name, d in g.items():
        if isinstance(d, dict):
            rows.append(f"{f'GPTCache: {name}':<58} {f(d)}")
    for name, d in r["thread_probe"].items():
        rows.append(f"{f'probe: {name}':<58} {f(d)}")
    for size, w in r["warm_up"].items():
        rows.append(f"\n{int(size):,} chunks: BM25 snapshot built in {w['bm25_snapshot_build_s']} s")
    calls = c["embedder_calls"]
    rows.append(f"\nembedder calls in the gateway: {calls['exact_http']} for {calls['exact_http_requests']} exact "
                f"repeats, {calls['semantic_http']} for {calls['semantic_http_requests']} paraphrase hits; "
                f"paraphrase hits: ragfn {c['paraphrase_hits']}/{c['paraphrases']}, "
                f"GPTCache {g['paraphrase_hits']}/{g['paraphrases']}")
    rows += [f"ratio {k}: {v:.2f}" for k, v in r["ratios"].items()]
    rows += [f"target {k}: {'met' if v else 'NOT met'}" for k, v in r["targets"].items()]
    return "\n".join(rows)
