"""Multi-tenant retrieval at scale, each backend in the same run: LanceDB on local disk, LanceDB on moto's S3 server
and Chroma (the embedded default). Not in CI: a 1M-row build takes most of an hour on 2 cores.

    .venv/bin/python bench/scale.py --rows 1000000 [--backends lancedb,lancedb-s3,chroma] [--real 100000]

Rows: the real chunks and vectors of bench/query_corpus.py (Debian documentation, embedded by ragfn's MiniLM); rows
past `--real` are SYNTHETIC, marked so in the output: copy k of a real chunk has its text with " [copy k]" appended
and its vector with Gaussian noise (sigma 0.02, renormalised). 100 tenants with Zipf sizes (tenant k holds about
1/k of tenant 1's rows: t1 19%, t19 1%), assigned by whole document; ACL groups per document: 70% public, 20% eng,
10% hr. All but the first `--measured` rows are bulk-loaded into the backend's tables (a table per tenant, as
ragfn.store.partitions lays them out) and its maintenance runs (LanceDB: indexes); then those first rows go through
the index stage's own write path (`write_batch`, timed: ingest rows/s into a full index). On moto's S3 server the
1% tenant's table and the ledger are copied from the local run and only that tenant is measured.

Reported per backend: p50/p95 of dense, lexical and hybrid retrieval (ragfn's retrievers, top 10, real questions
and their real query vectors) for the 1% tenant with groups (eng) and for the largest tenant; the time from a commit
until a second reader finds the new document; a fresh retrieve process's cold start (first hybrid answer after
start) and resident memory; dense recall@10 against exact search. bench/scale_probe.py is that fresh process.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from offline import offline_model_dir  # noqa: E402
from query_corpus import Corpus  # noqa: E402
from query_timing import log, summary  # noqa: E402
from scale_rows import Layout, bulk_load, write_measured  # noqa: E402

from ragfn.core.config import OFFLINE_MODEL, Settings  # noqa: E402
from ragfn.retrieval.dense import Caller  # noqa: E402
from ragfn.serve.runtime import Runtime  # noqa: E402

QUESTIONS = json.loads((REPO / "bench" / "query_questions.json").read_text())["retrieve"]
COLLECTION = "scale"


def backend_settings(name: str, home: Path, model: Path, endpoint: str | None) -> Settings:
    base = Settings(home=home / name, embed_model=OFFLINE_MODEL, embed_model_path=model, embed_threads=1)
    if name == "chroma":
        return base
    lance = base.model_copy(update={"store": "lancedb", "lancedb_refresh_seconds": 1.0})
    if name == "lancedb-s3":
        return lance.model_copy(update={"lancedb_uri": "s3://scale/ragfn", "s3_endpoint_url": endpoint})
    return lance


def timed(call, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def latencies(runtime: Runtime, vectors: np.ndarray, caller: Caller, reps: int, questions: int) -> dict:
    retriever = runtime.retriever
    out = {}
    for mode in ("dense", "lexical", "hybrid"):
        retriever.search(QUESTIONS[0], mode=mode, collection=COLLECTION, caller=caller, vector=vectors[0])  # warm
        samples = []
        for _ in range(reps):
            for question, vector in zip(QUESTIONS[:questions], vectors[:questions], strict=True):
                samples += timed(lambda q=question, v=vector: retriever.search(
                    q, mode=mode, collection=COLLECTION, top_k=10, caller=caller, vector=v), 1)
        out[mode] = summary(samples)
    return out


def dense_recall(runtime: Runtime, vectors: np.ndarray, caller: Caller) -> float:
    """Recall@10 of the backend's dense search against exact cosine over the caller's readable rows."""
    ids, matrix = [], []
    for page in runtime.index.rows(COLLECTION):
        for chunk_id, meta in zip(page.ids, page.metadatas, strict=True):
            if caller.can_read(meta):
                ids.append(chunk_id)
    if not ids or not hasattr(runtime.index, "chunk_table"):
        return float("nan")  # Chroma: exact vectors would need a second full read; its HNSW recall is its own
    table = runtime.index.chunk_table(COLLECTION, caller.tenant)
    wanted = set(ids)
    for batch in table.search().select(["id", "vector"]).limit(None).to_batches(50_000):
        for row in batch.to_pylist():
            if row["id"] in wanted:
                matrix.append((row["id"], row["vector"]))
    names = [m[0] for m in matrix]
    exact = np.asarray([m[1] for m in matrix], dtype=np.float32)
    exact /= np.linalg.norm(exact, axis=1, keepdims=True)
    hits = total = 0
    for vector in vectors:
        truth = {names[i] for i in np.argsort(-(exact @ (vector / np.linalg.norm(vector))))[:10]}
        found = {h.chunk_id for h in runtime.index.dense_search(COLLECTION, vector, top_k=10, caller=caller)}
        hits, total = hits + len(truth & found), total + 10
    return round(hits / total, 3)


def commit_to_searchable(writer: Runtime, reader_settings: Settings, layout: Layout) -> dict:
    """A new document committed by one process's index, searched for by another replica's (lexical and dense)."""
    reader = Runtime(reader_settings)
    caller = layout.small_caller
    reader.retriever.search("warm", mode="lexical", collection=COLLECTION, caller=caller)
    token = f"zebrafinch{int(time.time())}"
    vector = layout.probe_vector()
    started = time.perf_counter()
    layout.write_probe(writer.index, token, vector)
    committed = time.perf_counter() - started
    found: dict[str, float] = {}
    while len(found) < 2 and time.perf_counter() - started < 1800:  # Chroma's BM25 rebuilds are spaced
        if "lexical" not in found and reader.retriever.search(token, mode="lexical", collection=COLLECTION,
                                                              top_k=1, caller=caller):
            found["lexical"] = time.perf_counter() - started - committed
        if "dense" not in found and any(token in h.text for h in reader.index.dense_search(
                COLLECTION, vector, top_k=1, caller=caller)):
            found["dense"] = time.perf_counter() - started - committed
        time.sleep(0.05)
    return {"commit_s": round(committed, 3), **{f"{k}_searchable_after_s": round(v, 3) for k, v in found.items()}}


def probe(settings: Settings, vectors_path: Path, layout: Layout) -> dict:
    """A fresh retrieve process: cold start to its first hybrid answer, then resident memory after queries."""
    env_settings = {f"RAGFN_{k.upper()}": str(v) for k, v in settings.model_dump().items()
                    if v is not None and k in ("home", "store", "lancedb_uri", "s3_endpoint_url", "embed_model",
                                               "embed_model_path", "lancedb_refresh_seconds")}
    import os

    result = subprocess.run([sys.executable, str(REPO / "bench" / "scale_probe.py"), COLLECTION, str(vectors_path),
                             layout.small_caller.tenant, ",".join(layout.small_caller.groups)],
                            env=dict(os.environ, **env_settings), capture_output=True, text=True, timeout=1800)
    if result.returncode:
        return {"error": result.stderr[-2000:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_backend(name: str, args, corpus_rows, home: Path, model: Path, endpoint: str | None, vectors, vpath) -> dict:
    settings = backend_settings(name, home, model, endpoint)
    runtime = Runtime(settings)
    layout = Layout(corpus_rows, args.rows, COLLECTION)
    report: dict = {"backend": name, "rows": args.rows, "synthetic_rows": max(0, args.rows - len(corpus_rows.texts))}
    if name == "lancedb-s3" and args.copy_from:  # the same tables, uploaded to the bucket: reported beside local disk
        started = time.perf_counter()
        tenants = (layout.small_caller.tenant,) + ((layout.large_caller.tenant,) if args.s3_largest else ())
        report["uploaded_tables"] = layout.upload(Path(args.copy_from), endpoint, tenants)
        report["upload_s"] = round(time.perf_counter() - started, 1)
    else:
        started = time.perf_counter()
        bulk_load(runtime.index, layout, args.measured)
        report["bulk_load_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        report["maintenance"] = runtime.maintenance.run()
        report["maintenance_s"] = round(time.perf_counter() - started, 1)
        # into the full table: what the index stage sustains at this size (the first documents were held back)
        report["ingest_rows_per_s"] = write_measured(runtime.index, layout, args.measured)
    report["tenants"] = layout.tenant_rows()
    callers = [("tenant_1pct_groups", layout.small_caller), ("largest_tenant", layout.large_caller)]
    measured = callers if "uploaded_tables" not in report or args.s3_largest else callers[:1]  # what moto holds
    for label, caller in measured:
        slow = name != "lancedb"
        report[label] = latencies(runtime, vectors, caller, args.slow_reps if slow else args.reps,
                                  args.slow_questions if slow else len(QUESTIONS))
        log(f"   {name} {label}: {json.dumps(report[label])}")
    if not runtime.index.full_text:  # the embedded default's BM25: a snapshot per tenant, built on its first query
        snapshots = runtime.retriever.lexical._snapshots
        report["bm25_build_s"] = {tenant: round(snapshots[(COLLECTION, tenant)].build_seconds, 2)
                                  for tenant in (layout.small_caller.tenant, layout.large_caller.tenant)}
    report["dense_recall_at_10_small"] = dense_recall(runtime, vectors[:10], layout.small_caller)
    report["commit"] = commit_to_searchable(runtime, settings, layout)
    report["fresh_replica"] = probe(settings, vpath, layout)
    log(f"   {name}: {json.dumps({k: v for k, v in report.items() if k != 'tenants'})}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--real", type=int, default=100_000, help="real chunks to take from bench/query_corpus")
    parser.add_argument("--measured", type=int, default=20_000, help="rows written through write_batch, timed")
    parser.add_argument("--backends", default="lancedb,lancedb-s3,chroma")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--slow-reps", type=int, default=1, help="reps on moto S3 and Chroma (slow per query)")
    parser.add_argument("--slow-questions", type=int, default=len(QUESTIONS),
                        help="questions per mode on moto S3 and Chroma (the largest tenant on moto: seconds each)")
    parser.add_argument("--out", type=Path, default=REPO / ".ragfn" / "bench" / "scale")
    parser.add_argument("--copy-tables", type=Path, help="lancedb-s3 alone: copy the tables of an earlier local run")
    parser.add_argument("--s3-largest", action="store_true", help="copy and measure the largest tenant on moto too")
    args = parser.parse_args()
    # `timeout` and Ctrl-C end the run through `finally`, which stops the moto server this run started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    home = REPO / ".ragfn"
    model = offline_model_dir(home)
    corpus = Corpus(home / "bench" / "query", model, home / "corpora", args.real)
    from scale_rows import CorpusRows

    corpus_rows = CorpusRows.load(corpus, args.real)
    runtime = Runtime(Settings(home=args.out, embed_model=OFFLINE_MODEL, embed_model_path=model))
    vectors = runtime.embedder.embed(QUESTIONS)
    args.out.mkdir(parents=True, exist_ok=True)
    vpath = args.out / "question-vectors.npy"
    np.save(vpath, vectors)
    reports, endpoint, server = [], None, None
    names = args.backends.split(",")
    args.copy_from = str(args.copy_tables) if args.copy_tables else None
    try:
        if "lancedb-s3" in names:
            from scale_rows import moto_bucket

            server, endpoint = moto_bucket("scale")
        for name in names:
            if name == "lancedb-s3" and "lancedb" in names:
                args.copy_from = str(args.out / "lancedb" / "lancedb")
            log(f"-- {name}: {args.rows:,} rows ...")
            reports.append(run_backend(name, args, corpus_rows, args.out, model, endpoint, vectors, vpath))
    finally:
        if server is not None:
            server.terminate()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (args.out / f"scale-{stamp}.json").write_text(json.dumps(reports, indent=2))
    print(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
