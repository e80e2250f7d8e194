"""Parent-chunk (multi-scale) small-to-big: small chunks ranked with a bonus from the larger chunk that holds them.

    .venv/bin/python bench/parent_scale.py                          # both sets, gamma 0.25, 0.5, 1.0
    .venv/bin/python bench/parent_scale.py --sets debian-faq --gammas 0.5

A bench-only experiment; nothing here is wired into ragfn. Each set has two indexes, the small chunks of the current
default (96 tokens, 16 overlap) and the baseline's section-sized chunks (250 tokens, no overlap), both built by
bench/retrieval_sets.py. For a question, every small candidate of hybrid retrieval (dense and BM25, each 50 deep,
score fusion exactly as ragfn.retrieval.hybrid) scores

    fused_i + gamma * parent_z(P(i))

where P(i) is the 250-token chunk of the same document version whose character span overlaps chunk i most, and
parent_z is a standardised parent-level score from a search of the 250-token index, 50 deep:

- "pdense": the parent's dense similarity, z-scored over that list (a parent not in the list gets its lowest z);
- "phybrid": the parent's hybrid fused score (dense + 0.3 BM25, z-scores, as ragfn fuses), lowest for a missing one.

The small chunks are returned (the relevance rule judges small chunks). Mode `parent0` (gamma 0) reimplements plain
hybrid and must match `hybrid` exactly: a check of the reimplementation. Results go to
.ragfn/bench/parent_scale.json; the table shows the baseline (250/0 dense) and the current default (96/16 hybrid)
from the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "bench")]

from build_eval import SETS  # noqa: E402
from retrieval_sets import build, measure, open_index  # noqa: E402

from ragfn.retrieval.dense import Caller, Hit  # noqa: E402
from ragfn.retrieval.evalset import judge, load_queries  # noqa: E402
from ragfn.retrieval.metrics import summarize  # noqa: E402
from ragfn.retrieval.sections import standardise  # noqa: E402
from ragfn.serve.runtime import Runtime  # noqa: E402

SMALL, PARENT = (96, 16), (250, 0)
DEPTH = 50
COLUMNS = ("R@1", "R@10", "MRR@10", "nDCG@10")


def zscores(hits: list[Hit]) -> dict[str, float]:
    """Standardised scores over one list, as hybrid's score fusion does."""
    return standardise({hit.chunk_id: hit.score for hit in hits})


def parent_map(small: Runtime, parent: Runtime) -> dict[str, str]:
    """Each small chunk's parent: the large chunk of the same document version overlapping its span most."""
    def spans(runtime: Runtime) -> list[tuple[str, dict]]:
        return [(i, m) for page in runtime.index.rows("default") for i, m in zip(page.ids, page.metadatas,
                                                                                  strict=True)]

    by_doc: dict[tuple[str, str], list[tuple[int, int, str]]] = defaultdict(list)
    for chunk_id, meta in spans(parent):
        by_doc[(meta["document_id"], meta["version"])].append((int(meta["start"]), int(meta["end"]), chunk_id))
    parents, orphans = {}, 0
    for chunk_id, meta in spans(small):
        start, end = int(meta["start"]), int(meta["end"])
        best, most = None, 0
        for s, e, pid in sorted(by_doc.get((meta["document_id"], meta["version"]), [])):
            overlap = min(end, e) - max(start, s)
            if overlap > most:
                best, most = pid, overlap
        if best is None:
            orphans += 1
        else:
            parents[chunk_id] = best
    if orphans:
        print(f"  warning: {orphans} small chunks have no parent (they get the parent list's floor)", flush=True)
    return parents


def run_modes(name: str, out: Path, work: Path, gammas: list[float]) -> dict:
    small, _ = open_index(name, out, *SMALL, work)
    parent, _ = open_index(name, out, *PARENT, work)
    parent.__dict__["embedder"] = small.embedder  # same model: embed each question once
    parents = parent_map(small, parent)
    queries = load_queries(out / "queries.jsonl")
    hs, hp = small.retriever, parent.retriever
    caller = Caller(None, ())
    modes = ["parent0", *(f"{kind}{g:g}" for kind in ("pdense", "phybrid") for g in gammas)]
    judged: dict[str, list[list[bool]]] = {m: [] for m in modes}
    for q in queries:
        vector = small.embedder.embed([q.question])[0]
        lists = {"dense": hs.dense.search(q.question, top_k=DEPTH, caller=caller, vector=vector),
                 "lexical": hs.lexical.search(q.question, top_k=DEPTH, caller=caller)}
        fused = dict(hs._fuse(lists))
        hits = {hit.chunk_id: hit for ranked in lists.values() for hit in ranked}
        pdense_list = hp.dense.search(q.question, top_k=DEPTH, caller=caller, vector=vector)
        plex_list = hp.lexical.search(q.question, top_k=DEPTH, caller=caller)
        pz = {"pdense": zscores(pdense_list), "phybrid": dict(hp._fuse({"dense": pdense_list, "lexical": plex_list}))}
        for mode in modes:
            kind = "pdense" if mode == "parent0" else ("phybrid" if mode.startswith("phybrid") else "pdense")
            gamma = 0.0 if mode == "parent0" else float(mode.removeprefix(kind))
            table = pz[kind]
            floor = min(table.values()) if table else 0.0
            scored = {i: s + gamma * table.get(parents.get(i, ""), floor) for i, s in fused.items()}
            order = sorted(scored, key=lambda i: (-scored[i], i))[:10]
            judged[mode].append(judge(q, [hits[i].metadata for i in order]))
    report = {}
    for mode in modes:
        report[mode] = summarize(judged[mode])
        print(f"  {name:11} parent {mode:12} " + "  ".join(f"{k} {v:.3f}" for k, v in report[mode].items()),
              flush=True)
    return {"queries": len(queries), "modes": report}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--gammas", default="0.25,0.5,1.0", help="comma-separated parent weights")
    parser.add_argument("--work", type=Path, default=REPO / ".ragfn" / "bench" / "retrieval")
    parser.add_argument("--out", type=Path, default=REPO / ".ragfn" / "bench" / "parent_scale.json")
    args = parser.parse_args(argv)
    gammas = [float(g) for g in args.gammas.split(",") if g]
    results: dict = {}
    for name in [s for s in args.sets.split(",") if s]:
        out = build(name)
        rows = {"baseline 250/0 dense": measure(name, out, *PARENT, ["dense"], args.work)["modes"]["dense"],
                "default 96/16 hybrid": measure(name, out, *SMALL, ["hybrid+off"], args.work)["modes"]["hybrid+off"]}
        for mode, figures in run_modes(name, out, args.work, gammas)["modes"].items():
            rows[f"96/16 {mode}"] = figures
        results[name] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print("\n| set | ranking | " + " | ".join(COLUMNS) + " |\n|---|---|" + "---:|" * len(COLUMNS))
    for name, rows in results.items():
        for label, figures in rows.items():
            print(f"| {name} | {label} | " + " | ".join(f"{figures[c]:.3f}" for c in COLUMNS) + " |")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
