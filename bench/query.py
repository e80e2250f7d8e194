"""Query-path benchmark: retrieval latency at 10k/100k chunks and cache-hit latency against GPTCache, in one run."""

# Usage and results: docs/benchmarks.md, "Query path". Collections come from query_corpus.py (real documentation
# text, chunked, embedded and written by ragfn; built once, cached under .ragfn/bench/query). Compared systems take
# turns question by question, so a busy moment of the shared machine lands on all of them alike.

from __future__ import annotations

import os

# numpy's BLAS must not start threads that compete with onnxruntime's on 2 cores (set before numpy loads); the
# OpenMP default is left alone here because the GPTCache phase measures faiss with its default threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from offline import offline_model_dir
from query_cache import gateway, gptcache_peer, redis_db_is_free, thread_probe
from query_corpus import Corpus
from query_report import git_state, table
from query_timing import Served, interleaved, log, summary

from ragfn.core.config import OFFLINE_MODEL
from ragfn.retrieval.dense import Caller
from ragfn.serve.runtime import Runtime
from ragfn.store.chroma_tables import where as chroma_where

REPO = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("RAGFN_HOME", REPO / ".ragfn"))
QUESTIONS = json.loads((REPO / "bench" / "query_questions.json").read_text())


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.model_dir = offline_model_dir(HOME)
        self.questions = QUESTIONS["retrieve"][:args.questions]
        self.pairs = QUESTIONS["paraphrases"]
        self.corpus = Corpus(HOME / "bench" / "query", self.model_dir, HOME / "corpora", max(args.sizes))
        # no reranker and no remote stages, whatever this shell's RAGFN_* say (the servers get none of them)
        self.settings = self.corpus.settings.model_copy(update={
            "redis_url": args.redis_url, "embed_threads": args.embed_threads, "rerank_model": None,
            "retrieve_url": None, "cache_url": None})
        self.runtime = Runtime(self.settings)
        self.logs = self.corpus.home / "logs"  # the servers' output, kept after the run for diagnosis
        self.logs.mkdir(parents=True, exist_ok=True)
        # every ragfn server gets the same thread settings as this process's runtime
        self.env = {"RAGFN_HOME": str(self.corpus.home), "RAGFN_EMBED_MODEL": OFFLINE_MODEL,
                    "RAGFN_EMBED_MODEL_PATH": str(self.model_dir), "RAGFN_EMBED_THREADS": str(args.embed_threads),
                    "RAGFN_REDIS_URL": args.redis_url, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

    def budget(self) -> float:
        return self.args.phase_seconds

    def build(self) -> dict:
        started, built = time.perf_counter(), {}
        for size in self.args.sizes:
            name, info = self.corpus.collection(size)
            built[size] = {"collection": name} | info
        # the gateway searches as a tenant, so it gets its own tenant-labelled collection; cache hits never search it
        name, info = self.corpus.collection(min(10_000, self.args.sizes[0]), tenant="bench")
        built["gateway"] = {"collection": name} | info
        return {"collections": built, "build_or_load_s": round(time.perf_counter() - started, 1)}

    # -- retrieval ---------------------------------------------------------------------------------------------------

    def warm(self, size: int, collection: str) -> dict:
        """Loads the model, the HNSW index and the BM25 snapshot (the first lexical search builds it)."""
        retriever = self.runtime.retriever
        started = time.perf_counter()
        retriever.search("warm up the dense path", mode="dense", collection=collection)
        out = {"first_dense_s": round(time.perf_counter() - started, 2)}
        started = time.perf_counter()
        retriever.search("warm up the lexical path", mode="lexical", collection=collection)
        return out | {"bm25_snapshot_build_s": round(time.perf_counter() - started, 2)}

    def retrieval(self, collection: str) -> dict:
        """ragfn's retriever (top_k 10) next to its floor: the same embedding and a bare Chroma query, no filter.
        Then the parts of a hybrid search: the embedding, Chroma at fusion depth with ragfn's tenant/ACL filter,
        Chroma unfiltered for as many candidates as the dense search first asks for, and BM25 at fusion depth."""
        retriever, embedder = self.runtime.retriever, self.runtime.embedder
        chroma = self.runtime.index.chunks(collection)
        where, depth = chroma_where(Caller()), retriever.depth

        def search(mode: str):
            return lambda q: retriever.search(q, mode=mode, collection=collection, top_k=10)

        def floor(q: str) -> None:
            chroma.query(query_embeddings=[embedder.embed([q])[0]], n_results=10,
                         include=["documents", "metadatas", "distances"])

        result = interleaved({"dense": search("dense"), "hybrid": search("hybrid"), "floor_embed_chroma": floor},
                             self.questions, self.args.reps, self.budget() * 0.6, f"{collection} retrieval")
        vectors = dict(zip(self.questions, embedder.embed(self.questions), strict=True))

        def chroma_query(filtered: bool, n: int):
            extra = {"where": where} if filtered else {}
            return lambda q: chroma.query(query_embeddings=[vectors[q]], n_results=n, **extra,
                                          include=["documents", "metadatas", "distances"])

        # ragfn's dense search may first ask Chroma unfiltered for `overfetch` times the hits it wants
        fetch = min(depth * getattr(retriever.dense, "overfetch", 1), 1000)
        parts = interleaved({"part_embed": lambda q: embedder.embed([q]),
                             f"part_chroma_k{depth}_filtered": chroma_query(True, depth),
                             f"part_chroma_k{fetch}_unfiltered": chroma_query(False, fetch),
                             f"part_bm25_k{depth}": lambda q: retriever.lexical.search(q, collection=collection,
                                                                                        top_k=depth)},
                            self.questions, self.args.reps, self.budget() * 0.4, f"{collection} hybrid parts")
        return result | parts

    def http_retrieve(self, collections: dict[int, str]) -> dict:
        """functions/retrieve under functions-framework, each request timed at the client (HTTP, JSON, context
        assembly included) and by the function itself."""
        out: dict = {}
        server = Served("functions/retrieve/main.py", 18931, self.env, self.logs / "retrieve-server.log")
        try:
            for size, collection in collections.items():
                out[size] = self._http_collection(server, collection, self.budget() / len(collections))
        finally:
            server.stop()
        return out

    def _http_collection(self, server: Served, collection: str, seconds: float) -> dict:
        for q in self.questions[:3]:  # the server's first requests load the model, HNSW and BM25
            for mode in ("dense", "hybrid"):
                server.post("/", {"question": q, "collection": collection, "mode": mode, "top_k": 10})
        inside: dict[str, list[float]] = {"dense": [], "hybrid": []}  # the function's own timing

        def call(mode: str):
            return lambda q: inside[mode].append(server.post("/", {
                "question": q, "collection": collection, "mode": mode, "top_k": 10})["timings_ms"]["retrieve"])

        # no in-process turns in between: onnxruntime's threads spin for a while after each run, so two processes
        # taking turns on 2 cores slow each other; the in-process figures come from their own phase
        before = server.embed_calls()
        out = interleaved({f"http_{mode}": call(mode) for mode in ("dense", "hybrid")}, self.questions,
                          self.args.reps, seconds, f"{collection} retrieve over HTTP")
        requests = out["http_dense"]["n"] + out["http_hybrid"]["n"]
        return out | {f"function_timing_{mode}": summary(v) for mode, v in inside.items()} | {
            "client_reconnects": server.reconnects,
            "server_embed_calls_per_request": round((server.embed_calls() - before) / requests, 3)}

    # -- the run -----------------------------------------------------------------------------------------------------

    def run(self) -> dict:
        redis_db_is_free(self.args.redis_url)  # checked before the long phases, not only at the cache phase
        log(f"-- collections {self.args.sizes} (cached under {self.corpus.home}) ...")
        corpus = self.build()
        log("-- onnxruntime threads for one query's embedding ...")
        threads = thread_probe(self.model_dir, HOME, self.questions, min(30.0, self.budget() / 4))
        retrieval, warm = {}, {}
        for size in self.args.sizes:
            collection = corpus["collections"][size]["collection"]
            log(f"-- retrieval in-process, {collection} ...")
            warm[size] = self.warm(size, collection)
            retrieval[size] = self.retrieval(collection)
        log("-- retrieve function over HTTP ...")
        http = self.http_retrieve({s: corpus["collections"][s]["collection"] for s in self.args.sizes})
        log("-- ask gateway cache hits over HTTP ...")
        cache = gateway(self.env, self.runtime, corpus["collections"]["gateway"]["collection"], self.pairs,
                        self.args.reps, self.budget(), self.tmp, self.logs, 18932)
        log("-- GPTCache, in-process ...")
        embedders = {self.args.embed_threads: self.runtime.embedder}  # GPTCache also runs with one ORT thread
        embedders.setdefault(1, Runtime(self.settings.model_copy(update={"embed_threads": 1})).embedder)
        peer = gptcache_peer(embedders, self.pairs, self.args.reps, self.budget(), self.corpus.home / "gptcache")
        return self.report(corpus, threads, warm, retrieval, http, cache, peer)

    def report(self, corpus, threads, warm, retrieval, http, cache, peer) -> dict:
        largest, t = self.args.sizes[-1], self.args.embed_threads
        p50 = lambda d: d["p50_ms"]
        ratios = {f"{s}_hybrid_over_floor": p50(retrieval[s]["hybrid"]) / p50(retrieval[s]["floor_embed_chroma"])
                  for s in self.args.sizes}
        ratios |= {f"{s}_http_hybrid_over_in_process": p50(http[s]["http_hybrid"]) / p50(retrieval[s]["hybrid"])
                   for s in self.args.sizes}
        # GPTCache as configured by default (ragfn's ORT threads, faiss's default OpenMP), and at its best setting
        default = f"ort{t}_omp{peer['faiss_default_omp_threads']}"
        best = {kind: min((k for k in peer if k.startswith(f"gptcache_{kind}_")), key=lambda k: p50(peer[k]))
                for kind in ("semantic", "exact")}
        ratios |= {
            "gptcache_default_semantic_over_ragfn_lookup": p50(peer[f"gptcache_semantic_{default}"]) / p50(
                cache["ragfn_lookup_semantic"]),
            "gptcache_best_semantic_over_ragfn_lookup": p50(peer[best["semantic"]]) / p50(cache["ragfn_lookup_semantic"]),
            "gptcache_best_semantic_over_ragfn_http": p50(peer[best["semantic"]]) / p50(cache["ask_http_semantic"]),
            "gptcache_best_exact_over_ragfn_http_exact": p50(peer[best["exact"]]) / p50(cache["ask_http_exact"]),
            f"gptcache_semantic_{default}_over_ort{t}_omp1": p50(peer[f"gptcache_semantic_{default}"]) / p50(
                peer[f"gptcache_semantic_ort{t}_omp1"])}
        calls = cache["embedder_calls"]
        targets = {
            f"hybrid_p50_{largest}_in_process<50ms": p50(retrieval[largest]["hybrid"]) < 50,
            f"hybrid_p50_{largest}_http<50ms": p50(http[largest]["http_hybrid"]) < 50,
            "semantic_hit_p50_http<10ms": p50(cache["ask_http_semantic"]) < 10,
            "exact_repeat_p50_http<3ms": p50(cache["ask_http_exact"]) < 3,
            "exact_repeat_no_embedder_call": calls["exact_http"] == 0 and calls["exact_in_process"] == 0}
        return {
            "benchmark": "bench/query.py", "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([".venv/bin/python", "bench/query.py", *sys.argv[1:]]),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "loadavg_1m_at_end": round(os.getloadavg()[0], 2)},
            "ragfn": git_state(),
            "versions": {p: version(p) for p in ("fastembed", "onnxruntime", "chromadb", "functions-framework",
                                                 "redis", "gptcache", "faiss-cpu")},
            "settings": {"sizes": self.args.sizes, "reps": self.args.reps, "questions": len(self.questions),
                         "paraphrase_pairs": len(self.pairs), "embed_threads": t, "server_env": self.env,
                         "phase_seconds": self.budget(), "model": str(self.model_dir)},
            "corpus": corpus, "thread_probe": threads, "warm_up": warm, "retrieval": retrieval,
            "http_retrieve": http, "cache": cache, "gptcache": peer,
            "ratios": {k: round(v, 3) for k, v in ratios.items()}, "targets": targets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="collection sizes in chunks, comma-separated")
    parser.add_argument("--reps", type=int, default=5, help="times each question is asked per system")
    parser.add_argument("--questions", type=int, default=40, help="retrieval questions to use (at most 40)")
    parser.add_argument("--embed-threads", type=int, default=os.cpu_count() or 1,
                        help="onnxruntime threads for ragfn's query embedding, in-process and in its servers "
                             "(default: one per core, the fastest for one query at a time; see the probe)")
    parser.add_argument("--phase-seconds", type=float, default=120, help="time budget of each timed phase")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="an empty database; flushed at the end")
    parser.add_argument("--quick", action="store_true", help="2,000 chunks, 1 rep, 12 questions, 20 s phases")
    parser.add_argument("--json", action="store_true", help="print the JSON result instead of the table")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "query.json")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.reps, args.questions, args.phase_seconds = "2000", 1, 12, 20.0
    args.sizes = sorted(int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="ragfn-query-bench-") as tmp:
        result = Bench(args, Path(tmp)).run()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if args.json else table(result))
    log(f"written to {args.out}")


if __name__ == "__main__":
    main()
