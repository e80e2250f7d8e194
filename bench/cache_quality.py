"""Semantic cache quality: paraphrase hits and false hits of ragfn's RedisCache, and of GPTCache's rule, in one run.

    RAGFN_EMBED_MODEL=sentence-transformers/all-MiniLM-L6-v2 .venv/bin/python bench/cache_quality.py [--json]

Data: bench/data/cache_pairs.jsonl, one {"seed", "cached", "asked", "label"} per line; label is "paraphrase" (the
cached answer is right for the asked question) or "wrong_intent" / "negation" / "number" / "entity" (it is not).
Each pair gets a scope of its own in a real RedisCache on a real Redis (default DB 15, a unique key prefix, removed
at the end): the cached question is stored with its real embedding, then the asked one is looked up. A hit on a
paraphrase is wanted; a hit on any other label is a false hit. The same lookups run at ragfn's default threshold
(`Settings().cache_threshold`) and at a sweep of thresholds, and each is also scored without the guard.
Peer: GPTCache's default similarity rule (faiss L2 search + SearchDistanceEvaluation, max_distance 4.0) at its
`similarity_threshold` 0.9 on the same embeddings: a hit needs 4 - d² >= 0.9 * 4, i.e. squared L2 <= 0.4, which
for unit vectors is cosine >= 0.8. The real evaluation class is used when gptcache is importable.
Held-out: a third of the seed questions (sha256 of the seed) was set aside while the guard was written; figures are
reported for all pairs and for that part alone (see docs/query.md, "Cache quality", for what its first run showed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ragfn.cache.redis_cache import CacheScope, RedisCache, conflicting

DATA = Path(__file__).resolve().parent / "data" / "cache_pairs.jsonl"
LABELS = ("paraphrase", "wrong_intent", "negation", "number", "entity")
SWEEP = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.88, 0.9, 0.92, 0.95)
GPTCACHE_THRESHOLD = 0.9
TARGET = {"max_false_hit_rate": 0.01, "min_paraphrase_hit_rate": 0.80}
ANSWER = {"answer": "bench", "citations": [{"source": "bench"}]}


def load_pairs(path: Path = DATA) -> list[dict]:
    pairs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    bad = [p for p in pairs if p.get("label") not in LABELS or not p.get("cached") or not p.get("asked")]
    if bad:
        raise ValueError(f"{path}: {len(bad)} malformed pairs, e.g. {bad[0]}")
    return pairs


def held_out(pair: dict) -> bool:
    """Split by seed question, so every pair of one seed falls on the same side."""
    seed = pair.get("seed") or pair["cached"]
    return int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16) % 3 == 0


def score(pairs: list[dict], hits: list[bool]) -> dict:
    """Paraphrase hit rate, false-hit rate (hits on every other label) and both per label."""
    per_label = {}
    for label in LABELS:
        mine = [hit for pair, hit in zip(pairs, hits, strict=True) if pair["label"] == label]
        per_label[label] = {"pairs": len(mine), "hits": sum(mine), "rate": round(sum(mine) / len(mine), 4) if mine
                            else None}
    wrong = [hit for pair, hit in zip(pairs, hits, strict=True) if pair["label"] != "paraphrase"]
    para = per_label["paraphrase"]
    return {"paraphrase_hit_rate": para["rate"], "paraphrase_hits": para["hits"], "paraphrases": para["pairs"],
            "false_hit_rate": round(sum(wrong) / len(wrong), 4) if wrong else None, "false_hits": sum(wrong),
            "non_paraphrases": len(wrong), "per_label": per_label}


def both_parts(pairs: list[dict], hits: list[bool]) -> dict:
    held = [held_out(p) for p in pairs]
    return {"all": score(pairs, hits),
            "held_out": score([p for p, h in zip(pairs, held, strict=True) if h],
                              [x for x, h in zip(hits, held, strict=True) if h])}


def gptcache_rule(threshold: float = GPTCACHE_THRESHOLD) -> tuple[Callable[[float], bool], str]:
    """GPTCache's hit test on a faiss squared-L2 distance, from its adapter: rank >= (max - min) * threshold."""
    try:
        from gptcache.similarity_evaluation import SearchDistanceEvaluation
    except ImportError:
        max_distance = 4.0  # SearchDistanceEvaluation's default

        def hit(distance: float) -> bool:
            return max_distance - min(max(distance, 0.0), max_distance) >= max_distance * threshold

        return hit, "formula (gptcache not installed)"
    evaluation = SearchDistanceEvaluation()
    low, high = evaluation.range()
    return (lambda distance: evaluation.evaluation({}, {"search_result": (distance, None)}) >= (high - low) * threshold,
            "gptcache.similarity_evaluation.SearchDistanceEvaluation")


def measure(embedder, redis_client, *, pairs: list[dict] | None = None, threshold: float | None = None,
            sweep: tuple[float, ...] = SWEEP) -> dict:
    """Store each pair's cached question in its own scope of a real RedisCache, look the asked one up at the
    default threshold and each swept one, and score it all. The client's keys under a fresh prefix are removed."""
    if threshold is None:
        from ragfn.core.config import Settings

        threshold = Settings().cache_threshold
    pairs = load_pairs() if pairs is None else pairs
    texts = sorted({p["cached"] for p in pairs} | {p["asked"] for p in pairs})
    vectors = dict(zip(texts, np.asarray(embedder.embed(texts), dtype=np.float32), strict=True))
    embed = vectors.__getitem__  # every text is embedded once, in one batch; lookups only read
    cosine = [float(vectors[p["cached"]] @ vectors[p["asked"]]) for p in pairs]
    prefix = f"bench-cq-{uuid.uuid4().hex[:8]}"
    scopes = [CacheScope(f"bench-{i}", ("bench",), "bench", getattr(embedder, "name", "embedder"), "bench", "cq")
              for i in range(len(pairs))]
    try:
        store = RedisCache(redis_client, prefix=prefix)
        for pair, where in zip(pairs, scopes, strict=True):
            store.store(pair["cached"], embed(pair["cached"]), where, ANSWER, [])
        runs = {}
        for t in sorted({threshold, *sweep}):
            cache = RedisCache(redis_client, threshold=t, prefix=prefix)  # a new process's view: no vectors yet
            before = Counter(cache.stats())
            hits = [cache.lookup(p["asked"], where, embed) is not None for p, where in zip(pairs, scopes, strict=True)]
            guarded = {k.removeprefix("guarded_"): v for k, v in (Counter(cache.stats()) - before).items()
                       if k.startswith("guarded_")}
            runs[t] = both_parts(pairs, hits) | {"threshold": t, "guarded": guarded,
                                                 "without_guard": both_parts(pairs, [c >= t for c in cosine])}
            if t == threshold:  # for a reader to judge the guard: what got through, and what it refused
                runs[t]["false_hits"] = [p | {"similarity": round(c, 3)} for p, c, h
                                         in zip(pairs, cosine, hits, strict=True) if h and p["label"] != "paraphrase"]
                runs[t]["refused_paraphrases"] = [
                    p | {"similarity": round(c, 3), "reason": conflicting(p["asked"], p["cached"])}
                    for p, c, h in zip(pairs, cosine, hits, strict=True) if not h and c >= t
                    and p["label"] == "paraphrase"]
    finally:
        for key in redis_client.scan_iter(f"{prefix}:*"):
            redis_client.delete(key)
    gpt_hit, gpt_impl = gptcache_rule()
    gptcache = both_parts(pairs, [gpt_hit(2.0 - 2.0 * c) for c in cosine])  # squared L2 of unit vectors
    default = runs[threshold]
    met = {part: default[part]["false_hit_rate"] < TARGET["max_false_hit_rate"]
           and default[part]["paraphrase_hit_rate"] >= TARGET["min_paraphrase_hit_rate"]
           for part in ("all", "held_out")}
    return {"pairs": len(pairs), "held_out_pairs": sum(map(held_out, pairs)),
            "embedder": getattr(embedder, "name", type(embedder).__name__), "default_threshold": threshold,
            "ragfn": default, "sweep": [runs[t] for t in sorted(runs)],
            "gptcache": gptcache | {"rule": f"similarity_threshold {GPTCACHE_THRESHOLD}: squared L2 <= "
                                            f"{4 * (1 - GPTCACHE_THRESHOLD):.2f} (cosine >= "
                                            f"{1 - 2 * (1 - GPTCACHE_THRESHOLD):.2f})", "implementation": gpt_impl},
            "target": TARGET | {"met": met}}


def table(result: dict) -> str:
    def row(name: str, part: dict) -> str:
        labels = "  ".join(f"{part['per_label'][k]['rate']:>6.1%}" for k in LABELS[1:])
        para = f"{part['paraphrase_hit_rate']:>7.1%} ({part['paraphrase_hits']:>3}/{part['paraphrases']:<3})"
        false = f"{part['false_hit_rate']:>7.1%} ({part['false_hits']:>3}/{part['non_paraphrases']:<3})"
        return f"{name:<34} {para} {false}  {labels}"

    head = f"{'false hits per label:':>68}  " + "  ".join(f"{k[:6]:>6}" for k in LABELS[1:])
    head += f"\n{'':<34} {'paraphrase hits':>15} {'false hits':>15}"
    lines = [f"cache quality: {result['pairs']} pairs, {result['held_out_pairs']} of them held out (by seed "
             f"question); embedder {result['embedder']}; target: false hits < "
             f"{result['target']['max_false_hit_rate']:.0%} with paraphrase hits >= "
             f"{result['target']['min_paraphrase_hit_rate']:.0%}", head]
    t = result["default_threshold"]
    for part in ("all", "held_out"):
        lines.append(f"-- {part.replace('_', '-')} pairs")
        lines.append(row(f"ragfn t={t:.2f} (default), guarded", result["ragfn"][part]))
        lines.append(row(f"ragfn t={t:.2f}, threshold only", result["ragfn"]["without_guard"][part]))
        lines.append(row("GPTCache similarity_threshold 0.9", result["gptcache"][part]))
        for run in result["sweep"]:
            if run["threshold"] != t:
                lines.append(row(f"ragfn t={run['threshold']:.2f}, guarded", run[part]))
    default = result["ragfn"]
    lines.append(f"guard refusals at t={t:.2f}: {default['guarded']}; target met: {result['target']['met']}")
    lines.append(f"false hits at t={t:.2f} (what the guard let through):")
    lines += [f"  {p['similarity']:.3f} {p['label']:<12} {p['cached']!r} / {p['asked']!r}"
              for p in default["false_hits"]]
    lines.append(f"paraphrases above t={t:.2f} that the guard refused:")
    lines += [f"  {p['similarity']:.3f} {p['reason']:<9} {p['cached']!r} / {p['asked']!r}"
              for p in default["refused_paraphrases"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--threshold", type=float, default=None, help="default: Settings().cache_threshold")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON result here")
    args = parser.parse_args(argv)
    import redis

    from ragfn.core.config import Settings
    from ragfn.serve.runtime import Runtime

    embedder = Runtime(Settings()).embedder
    client = redis.Redis.from_url(args.redis_url)
    try:
        client.ping()
    except redis.RedisError as exc:
        sys.exit(f"error: Redis at {args.redis_url} is not reachable: {exc}")
    pairs = load_pairs(args.data)
    result = measure(embedder, client, pairs=pairs, threshold=args.threshold)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(table(result))


if __name__ == "__main__":
    main()
