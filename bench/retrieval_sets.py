"""Retrieval on every labelled set against the section-per-chunk dense baseline, measured in the same run.

    .venv/bin/python bench/retrieval_sets.py                  # both sets, ragfn's defaults and the baseline
    .venv/bin/python bench/retrieval_sets.py --config big=200/32:hybrid,dense --sets debian-faq

A default is kept only when it beats, on every set, the baseline: one chunk per section up to about 1,000
characters (250 MiniLM tokens, no overlap), dense only (docs/benchmarks.md, "Retrieval quality"). Each set is built
by scripts/build_eval.py's code and ingested once per chunking into .ragfn/bench/retrieval/<set>-<tokens>x<overlap>
(kept: a later run reuses it). Results go to bench/results/retrieval_sets.json; ratios are against the baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "bench")]

from build_eval import SETS, default_out  # noqa: E402
from fetch_corpus import sources_dir  # noqa: E402
from offline import offline_model_dir  # noqa: E402

from ragfn.core.config import OFFLINE_MODEL, Settings  # noqa: E402
from ragfn.ingest.walk import ingest  # noqa: E402
from ragfn.retrieval.debian_faq import build_debian_faq  # noqa: E402
from ragfn.retrieval.dense import Caller  # noqa: E402
from ragfn.retrieval.evalset import build_eval_set, judge, load_queries  # noqa: E402
from ragfn.retrieval.metrics import summarize  # noqa: E402
from ragfn.serve.runtime import Runtime  # noqa: E402

BASELINE = "sections=250/0:dense"
DEFAULT = "default=96/16:hybrid,dense,lexical"


def parse_config(spec: str) -> tuple[str, int, int, list[str]]:
    """NAME=TOKENS/OVERLAP:MODE[,MODE...]"""
    try:
        name, rest = spec.split("=", 1)
        chunking, modes = rest.split(":", 1)
        tokens, overlap = (int(n) for n in chunking.split("/"))
    except ValueError:
        sys.exit(f"error: bad --config {spec!r}; write NAME=TOKENS/OVERLAP:MODE[,MODE], e.g. {DEFAULT}")
    return name, tokens, overlap, [m for m in modes.split(",") if m]


def build(name: str) -> Path:
    out = default_out(name)
    sources = sources_dir(package=SETS[name])
    build_debian_faq(sources, out) if name == "debian-faq" else build_eval_set(sources / "faq", out)
    return out


def measure(name: str, out: Path, tokens: int, overlap: int, modes: list[str], work: Path) -> dict:
    home = work / f"{name}-{tokens}x{overlap}"
    settings = Settings(home=home, embed_model=OFFLINE_MODEL, embed_model_path=offline_model_dir(REPO / ".ragfn"),
                        chunk_tokens=tokens, chunk_overlap_tokens=overlap, file_roots=[out])
    runtime = Runtime(settings)
    ingest([str(out / "corpus")], runtime)  # unchanged files are skipped on a re-run
    queries = load_queries(out / "queries.jsonl")
    report = {}
    for mode in modes:
        ranked = [judge(q, [hit.metadata for hit in runtime.retriever.search(
            q.question, mode=mode, collection="default", top_k=10, caller=Caller(None, ()))]) for q in queries]
        report[mode] = summarize(ranked)
        print(f"  {name:11} {tokens:>4}/{overlap:<3} {mode:8} " +
              "  ".join(f"{k} {v:.3f}" for k, v in report[mode].items()), flush=True)
    return {"queries": len(queries), "modes": report}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--config", action="append", default=None,
                        help=f"NAME=TOKENS/OVERLAP:MODES, repeatable (default: {DEFAULT}); the baseline always runs")
    parser.add_argument("--work", type=Path, default=REPO / ".ragfn" / "bench" / "retrieval")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "retrieval_sets.json")
    args = parser.parse_args(argv)
    sets = [s for s in args.sets.split(",") if s]
    if unknown := [s for s in sets if s not in SETS]:
        sys.exit(f"error: unknown set {', '.join(unknown)}; choose from {', '.join(SETS)}")
    configs = [parse_config(spec) for spec in [BASELINE, *(args.config or [DEFAULT])]]
    results: dict = {}
    for name in sets:
        out = build(name)
        results[name] = {}
        for label, tokens, overlap, modes in configs:
            results[name][label] = measure(name, out, tokens, overlap, modes, args.work)
        base = results[name]["sections"]["modes"]["dense"]["nDCG@10"]
        for label, row in results[name].items():
            for mode, figures in row["modes"].items():
                figures["nDCG@10 / baseline"] = round(figures["nDCG@10"] / base, 3) if base else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\n{'set':11} {'config':10} {'mode':8} nDCG@10  vs baseline")
    for name, rows in results.items():
        for label, row in rows.items():
            for mode, figures in row["modes"].items():
                print(f"{name:11} {label:10} {mode:8} {figures['nDCG@10']:.3f}    {figures['nDCG@10 / baseline']}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
