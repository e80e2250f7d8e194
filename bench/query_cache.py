"""Cache-hit latency for bench/query.py: ragfn's ask gateway over HTTP, and GPTCache in-process as the peer."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import time
from pathlib import Path

from query_timing import Served, in_blocks, interleaved, log, summary

from ragfn.cache.redis_cache import CacheScope
from ragfn.ingest.embedding import FastEmbedder
from ragfn.llm.client import PROMPT_VERSION
from ragfn.serve.runtime import Runtime

KEY, TENANT, GROUPS = "bench-query-key", "bench", ["eng"]


def redis_db_is_free(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    if client.dbsize():
        raise SystemExit(f"error: {url} is not empty; the bench flushes that database when it ends, "
                         "so give it an empty one with --redis-url")


def gateway(env: dict[str, str], runtime: Runtime, collection: str, pairs: list[list[str]], reps: int,
            seconds: float, tmp: Path, logs: Path, port: int) -> dict:
    """The ask function under functions-framework over HTTP with Redis: cached questions are asked once (misses:
    retrieve + extractive answer + store), then exact repeats and paraphrases are timed, and the server's embedder
    calls are counted around each loop. The same lookups are also timed in-process (RedisCache.lookup)."""
    import redis

    redis_db_is_free(env["RAGFN_REDIS_URL"])
    try:
        return _gateway(env, runtime, collection, pairs, reps, seconds, tmp, logs, port)
    finally:  # the database was empty when this began, so whatever is in it now is the bench's
        redis.Redis.from_url(env["RAGFN_REDIS_URL"]).flushdb()


def _gateway(env: dict[str, str], runtime: Runtime, collection: str, pairs: list[list[str]], reps: int,
             seconds: float, tmp: Path, logs: Path, port: int) -> dict:
    keys = tmp / "keys.json"
    keys.write_text(json.dumps({hashlib.sha256(KEY.encode()).hexdigest():
                                {"tenant": TENANT, "groups": GROUPS, "name": "bench"}}))
    # the rate limiter stays on (one Lua call per request, as in production) with a limit the bench never reaches
    env = env | {"RAGFN_API_KEYS_FILE": str(keys), "RAGFN_RATE_LIMIT": "1000000000"}
    server = Served("functions/ask/main.py", port, env, logs / "ask-server.log")
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        def ask(question: str) -> dict:
            return server.post("/v1/ask", {"question": question, "collection": collection}, headers)

        started = time.perf_counter()
        primed = [ask(q) for q, _ in pairs]  # first request loads the model, Chroma and the BM25 snapshot
        prime_s = time.perf_counter() - started
        cached = [q for (q, _), r in zip(pairs, primed, strict=True) if r["cache"] == "miss" and r["citations"]]
        log(f"   primed {len(pairs)} questions in {prime_s:.1f}s; {len(cached)} answers with citations are cached")
        hits = {p: ask(p) for q, p in pairs if q in cached}  # warm-up, and which paraphrases the cache answers
        semantic = [p for p, r in hits.items() if r["cache"] == "hit"]
        for q in cached[:5]:
            ask(q)
        stage: dict[str, list[float]] = {"exact": [], "semantic": []}  # the gateway's own cache-stage timing

        def hit(kind: str):
            return lambda q: stage[kind].append(_hit(ask(q))["timings_ms"]["cache"])

        before = server.embed_calls()
        exact = interleaved({"ask_http_exact": hit("exact")}, cached, reps, seconds / 2, "exact repeats")
        exact_embeds = server.embed_calls() - before
        before = server.embed_calls()
        para = interleaved({"ask_http_semantic": hit("semantic")}, semantic, reps, seconds / 2, "paraphrase hits")
        para_embeds = server.embed_calls() - before
    finally:
        server.stop()

    # the same lookups without HTTP: RedisCache.lookup in this process, scope built as the gateway builds it
    scope = CacheScope(TENANT, tuple(GROUPS), collection, runtime.embedder.name, runtime.llm.name, PROMPT_VERSION)
    cache = runtime.cache
    calls = {"n": 0}

    def embed(q: str):
        calls["n"] += 1
        return runtime.embedder.embed([q])[0]

    def lookup(q: str) -> None:
        assert cache.lookup(q, scope, embed) is not None, q

    runtime.embedder.embed(["warm up"])
    in_process = interleaved({"ragfn_lookup_exact": lookup}, cached, reps, seconds / 4, "in-process exact lookup")
    exact_in_process_embeds, calls["n"] = calls["n"], 0
    in_process |= interleaved({"ragfn_lookup_semantic": lookup}, semantic, reps, seconds / 4,
                              "in-process semantic lookup")
    return {"collection": collection, "primed": len(pairs), "cached": len(cached), "paraphrases": len(pairs),
            "paraphrase_hits": len(semantic), "prime_s": round(prime_s, 2), **exact, **para, **in_process,
            "embedder_calls": {"exact_http": exact_embeds, "exact_http_requests": exact["ask_http_exact"]["n"],
                               "semantic_http": para_embeds, "semantic_http_requests": para["ask_http_semantic"]["n"],
                               "exact_in_process": exact_in_process_embeds},
            "client_reconnects": server.reconnects, "gateway_cache_stage_exact": summary(stage["exact"]),
            "gateway_cache_stage_semantic": summary(stage["semantic"])}


def _hit(body: dict) -> dict:
    assert body["cache"] == "hit", body
    return body


def gptcache_peer(embedders: dict[int, FastEmbedder], pairs: list[list[str]], reps: int, seconds: float,
                  work: Path) -> dict:
    """GPTCache 0.1.44 (sqlite + faiss) with ragfn's MiniLM embedder as its embedding function, in this process,
    under each pair of onnxruntime threads (`embedders` by thread count) and faiss OpenMP threads (default, 1).
    SearchDistanceEvaluation(max_distance=2) with similarity_threshold 0.9 accepts exactly what ragfn accepts:
    for unit vectors faiss's squared L2 is 2 - 2cos, so 2 - d >= 2 * 0.9 is cos >= 0.9."""
    for module in ("faiss", "sqlalchemy"):  # gptcache would otherwise `pip install` a missing one at import
        if importlib.util.find_spec(module) is None:
            raise SystemExit(f"error: {module} is missing; run `uv pip install -p .venv --group bench -e .`")
    import faiss
    from gptcache import Cache, Config
    from gptcache.adapter.api import get, put
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.processor.pre import get_prompt
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    # GPTCache flushes its faiss index from an atexit hook, so its files live in a folder that outlives the run
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    main = max(embedders)
    current = {"embedder": embedders[main]}
    cache = Cache()
    cache.init(pre_embedding_func=get_prompt, embedding_func=lambda data, **_: current["embedder"].embed([data])[0],
               data_manager=get_data_manager(CacheBase("sqlite", sql_url=f"sqlite:///{work / 'gptcache.db'}"),
                                             VectorBase("faiss", dimension=current["embedder"].dimensions,
                                                        index_path=str(work / "gptcache.faiss"), top_k=1)),
               similarity_evaluation=SearchDistanceEvaluation(max_distance=2.0),
               config=Config(similarity_threshold=0.9))
    for question, _ in pairs:
        put(question, f"cached answer to: {question}", cache_obj=cache)
    answered = [p for q, p in pairs if get(p, cache_obj=cache) == f"cached answer to: {q}"]
    omp = faiss.omp_get_max_threads()

    def lookup(q: str) -> None:
        assert get(q, cache_obj=cache) is not None, q

    def setting(ort: int, threads: int):
        def make() -> None:
            current["embedder"] = embedders[ort]
            faiss.omp_set_num_threads(threads)
        return make

    def settings(kind: str) -> dict:  # a process sets its thread counts once, so each setting gets whole blocks
        return {f"gptcache_{kind}_ort{ort}_omp{threads}": setting(ort, threads)
                for ort in sorted(embedders, reverse=True) for threads in sorted({omp, 1}, reverse=True)}

    para = in_blocks(settings("semantic"), lookup, answered, reps, seconds * 2 / 3, "GPTCache paraphrase")
    exact = in_blocks(settings("exact"), lookup, [q for q, _ in pairs], reps, seconds / 3, "GPTCache exact repeat")
    # the embedding alone, to show what share of a GPTCache hit is the model
    embed_only = interleaved({f"minilm_embed_one_question_ort{main}": lambda q: embedders[main].embed([q])},
                             answered, reps, seconds / 4, "embedder alone")
    faiss.omp_set_num_threads(omp)
    return {"paraphrase_hits": len(answered), "paraphrases": len(pairs), "faiss_default_omp_threads": omp,
            "onnxruntime_threads": sorted(embedders), **para, **exact, **embed_only}


def thread_probe(model_dir: Path, home: Path, questions: list[str], seconds: float) -> dict:
    """One question's embedding with onnxruntime at 1 and 2 intra-op threads (what RAGFN_EMBED_THREADS sets)."""
    from ragfn.core.config import OFFLINE_MODEL, Settings

    embedders = {}
    for threads in (1, 2):
        embedders[threads] = FastEmbedder.from_settings(Settings(home=home, embed_model=OFFLINE_MODEL,
                                                                 embed_model_path=model_dir, embed_threads=threads))
        embedders[threads].embed(["warm up"])
    def embed(embedder: FastEmbedder):
        return lambda q: embedder.embed([q])

    return interleaved({f"embed_threads_{t}": embed(e) for t, e in embedders.items()}, questions, 3, seconds,
                       "query embedding by onnxruntime threads")
