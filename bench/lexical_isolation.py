"""BM25 isolation between collections: what one collection's snapshot build costs another collection's queries, with
ragfn's lexical retriever (a lock per collection) against the behaviour it had before (one lock for every
collection, held across a build), measured in the same run.

    .venv/bin/python bench/lexical_isolation.py                # a 20,000-chunk collection: about 3 min the first time
    .venv/bin/python bench/lexical_isolation.py --size 100000  # the embedding of 100k chunks takes about an hour here

Collections come from bench/query_corpus.py (real documentation text, cached under .ragfn/bench/query). The "before"
peer is LexicalRetriever with one lock shared by every collection. (That one tenant's documents no longer move
another's scores is a correctness property, tested in tests/test_lexical.py, not a figure.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "bench")]

from offline import offline_model_dir  # noqa: E402
from query_corpus import Corpus  # noqa: E402

from ragfn.retrieval.dense import Caller  # noqa: E402
from ragfn.retrieval.lexical import LexicalRetriever  # noqa: E402

QUESTIONS = ["How do I sort a list?", "What is a tuple?", "How do I read a file line by line?",
             "What does the with statement do?", "How are exceptions raised?"]


class OneLock(LexicalRetriever):
    """The retriever as it was: one lock for every collection, held across a snapshot build."""

    def _snapshot_lock(self, key: tuple[str, str]) -> threading.Lock:
        return self._lock


def blocked_query_ms(retriever_type: type[LexicalRetriever], index, big: str, small: str) -> tuple[float, float]:
    """(the small collection's query time while the big one builds its first snapshot, the big build's seconds)."""
    lexical = retriever_type(index, refresh_seconds=3600)
    lexical.search(QUESTIONS[0], collection=small, caller=Caller("bench"))  # its own snapshot is ready
    started = time.perf_counter()
    build = threading.Thread(target=lexical.search, args=(QUESTIONS[0],), kwargs={"collection": big})
    build.start()
    time.sleep(0.2)  # the build has taken the lock
    asked = time.perf_counter()
    lexical.search(QUESTIONS[1], collection=small, caller=Caller("bench"))
    waited = (time.perf_counter() - asked) * 1000
    build.join()
    return waited, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "lexical_isolation.json")
    args = parser.parse_args()
    home = REPO / ".ragfn"
    corpus = Corpus(home / "bench" / "query", offline_model_dir(home), home / "corpora", args.size)
    big, _ = corpus.collection(args.size)
    small, _ = corpus.collection(1_000, tenant="bench")
    index = corpus.runtime.index
    report = {"size": args.size, "collections": {"big": big, "small": small}}
    print(f"a query on a 1,000-chunk collection while a {args.size:,}-chunk collection builds its BM25 snapshot:")
    for name, kind in (("before (one lock)", OneLock), ("now (a lock per collection)", LexicalRetriever)):
        waits, builds = zip(*(blocked_query_ms(kind, index, big, small) for _ in range(3)))
        report[name] = {"query_ms_p50": round(statistics.median(waits), 1),
                        "build_s_p50": round(statistics.median(builds), 2)}
        print(f"  {name:30} query {report[name]['query_ms_p50']:9.1f} ms   (the big build: "
              f"{report[name]['build_s_p50']:.2f} s)")
    before, now = report["before (one lock)"]["query_ms_p50"], report["now (a lock per collection)"]["query_ms_p50"]
    report["ratio_now_over_before"] = round(now / before, 4)
    print(f"  now / before: {now / before:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
