"""Retrieval on every labelled set against the section-per-chunk dense baseline, measured in the same run.

    .venv/bin/python bench/retrieval_sets.py                  # both sets, ragfn's defaults and the baseline
    .venv/bin/python bench/retrieval_sets.py --config big=200/32:hybrid,dense --sets debian-faq
    .venv/bin/python bench/retrieval_sets.py --config s2b=96/16:hybrid,hybrid+max,hybrid+sum,hybrid+fuse
    .venv/bin/python bench/retrieval_sets.py --sets python-faq+marked,debian-faq+marked --config ...
    .venv/bin/python bench/retrieval_sets.py --config win=96/16:hybrid,hybrid+window0.25,hybrid+wmean0.5

A mode `hybrid+SECTIONS` runs hybrid with RAGFN_RETRIEVAL_SECTIONS=SECTIONS (off, max, sum, fuse); a plain mode runs
with the setting's default. A mode `hybrid+windowBETA` (`hybrid+wmeanBETA`) runs hybrid with a neighbour window:
each chunk also scores BETA times the max (mean) of its adjacent chunks' fused scores (ragfn.retrieval.window).
A set `NAME+marked` is NAME with an opaque heading ("Answer 12") put back where each question heading was removed:
the chunker then cuts at every answer and a chunk's heading path names its answer, as in documents that keep their
headings, while the question's words still appear nowhere in the text. It is a diagnostic for section-level
ranking, not one of the sets a default must win on.

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
from ragfn.retrieval.evalset import EvalQuery, build_eval_set, judge, load_queries  # noqa: E402
from ragfn.retrieval.metrics import summarize  # noqa: E402
from ragfn.serve.runtime import Runtime  # noqa: E402

BASELINE = "sections=250/0:dense"
DEFAULT = "default=96/16:hybrid,dense,lexical,hybrid+max,hybrid+sum,hybrid+fuse"


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
    base, marked = name.removesuffix("+marked"), name.endswith("+marked")
    out = default_out(base)
    sources = sources_dir(package=SETS[base])
    build_debian_faq(sources, out) if base == "debian-faq" else build_eval_set(sources / "faq", out)
    return mark_answers(out, default_out(name)) if marked else out


def mark_answers(out: Path, marked: Path) -> Path:
    """A copy of the set at `out` with an opaque heading in front of every gold span, gold spans shifted to match."""
    queries = load_queries(out / "queries.jsonl")
    moved: list[EvalQuery] = []
    (marked / "corpus").mkdir(parents=True, exist_ok=True)
    for path in sorted((out / "corpus").iterdir()):
        text, pos, parts, shift = path.read_text("utf-8"), 0, [], 0
        for query in sorted((q for q in queries if q.source == path.name), key=lambda q: q.gold[0][0]):
            start = query.gold[0][0]
            title = f"Answer {len(moved) + 1}"
            heading = f"###### {title}\n\n" if path.suffix == ".md" else f"{title}\n{'~' * len(title)}\n\n"
            parts += [text[pos:start], heading]
            pos, shift = start, shift + len(heading)
            moved.append(EvalQuery(query.id, query.question, query.source,
                                   tuple((s + shift, e + shift) for s, e in query.gold)))
        target = marked / "corpus" / path.name
        new = "".join(parts) + text[pos:]
        if not target.is_file() or target.read_text("utf-8") != new:  # unchanged files keep their mtime: no re-ingest
            target.write_text(new, "utf-8")
    (marked / "queries.jsonl").write_text("".join(q.to_json() + "\n" for q in moved), "utf-8")
    return marked


def open_index(name: str, out: Path, tokens: int, overlap: int, work: Path) -> tuple[Runtime, Settings]:
    """The set's index at one chunking, ingested if needed (unchanged files are skipped on a re-run)."""
    home = work / f"{name}-{tokens}x{overlap}"
    settings = Settings(home=home, embed_model=OFFLINE_MODEL, embed_model_path=offline_model_dir(REPO / ".ragfn"),
                        chunk_tokens=tokens, chunk_overlap_tokens=overlap, file_roots=[out])
    runtime = Runtime(settings)
    ingest([str(out / "corpus")], runtime)
    return runtime, settings


def measure(name: str, out: Path, tokens: int, overlap: int, modes: list[str], work: Path) -> dict:
    runtime, settings = open_index(name, out, tokens, overlap, work)
    queries = load_queries(out / "queries.jsonl")
    report = {}
    retriever = runtime.retriever
    for spec in modes:
        # Runtime builds the retriever; the section ranking is set here so one ingest serves every variant
        mode, _, variant = spec.partition("+")
        retriever.sections, retriever.window, retriever.window_pool = window_variant(variant, settings)
        ranked = [judge(q, [hit.metadata for hit in retriever.search(
            q.question, mode=mode, collection="default", top_k=10, caller=Caller(None, ()))]) for q in queries]
        report[spec] = summarize(ranked)
        print(f"  {name:11} {tokens:>4}/{overlap:<3} {spec:14} " +
              "  ".join(f"{k} {v:.3f}" for k, v in report[spec].items()), flush=True)
    return {"queries": len(queries), "modes": report}


def window_variant(variant: str, settings: Settings) -> tuple[str, float, str]:
    """(sections, window, window_pool) for a mode's `+VARIANT`: windowBETA / wmeanBETA (neighbour window, max or mean
    of the neighbours, sections off), a section ranking, or nothing (the settings' sections, no window)."""
    for prefix, pool in (("window", "max"), ("wmean", "mean")):
        if variant.startswith(prefix):
            try:
                return "off", float(variant.removeprefix(prefix)), pool
            except ValueError:
                sys.exit(f"error: bad window {variant!r}; write e.g. hybrid+window0.25 or hybrid+wmean0.5")
    return variant or settings.retrieval_sections, 0.0, "max"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--config", action="append", default=None,
                        help=f"NAME=TOKENS/OVERLAP:MODES, repeatable (default: {DEFAULT}); the baseline always runs")
    parser.add_argument("--work", type=Path, default=REPO / ".ragfn" / "bench" / "retrieval")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "retrieval_sets.json")
    args = parser.parse_args(argv)
    sets = [s for s in args.sets.split(",") if s]
    if unknown := [s for s in sets if s.removesuffix("+marked") not in SETS]:
        sys.exit(f"error: unknown set {', '.join(unknown)}; choose from {', '.join(SETS)} (each may end +marked)")
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
    print(f"\n{'set':18} {'config':10} {'mode':14} nDCG@10  vs baseline")
    for name, rows in results.items():
        for label, row in rows.items():
            for mode, figures in row["modes"].items():
                print(f"{name:18} {label:10} {mode:14} {figures['nDCG@10']:.3f}    {figures['nDCG@10 / baseline']}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
