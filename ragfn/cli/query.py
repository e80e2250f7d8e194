"""`ragfn retrieve` and `ragfn eval`: the query path from a terminal, one process for a whole batch."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ragfn.core.errors import BadEvent, RagfnError
from ragfn.retrieval.dense import Caller
from ragfn.retrieval.hybrid import MODES

ModeOption = Annotated[str, typer.Option(help="dense | lexical | hybrid")]
TenantOption = Annotated[Optional[str], typer.Option(help="the caller's tenant")]
GroupsOption = Annotated[str, typer.Option(help="comma-separated ACL groups of the caller")]
JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _caller(tenant: str | None, groups: str) -> Caller:
    return Caller(tenant, tuple(g.strip() for g in groups.split(",") if g.strip()))


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise BadEvent(f"no such queries file: {path}")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadEvent(f"{path}:{number} is not JSON: {exc}") from exc
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise BadEvent(f"{path}:{number} needs a \"question\" string")
        rows.append(row)
    return rows


def register(app: typer.Typer, runtime_for, fail) -> None:
    @app.command()
    def retrieve(
        question: Annotated[Optional[str], typer.Argument(help="the question; omit with --queries")] = None,
        queries: Annotated[Optional[Path], typer.Option(help="JSONL file, one {\"question\": ...} a line")] = None,
        collection: str = "default",
        top_k: Annotated[int, typer.Option("--top-k")] = 10,
        mode: ModeOption = "hybrid",
        tenant: TenantOption = None,
        groups: GroupsOption = "",
        as_json: JsonOption = False,
    ) -> None:
        """Top chunks for a question (or for every line of --queries), as the retrieve function ranks them."""
        try:
            if (question is None) == (queries is None):
                raise BadEvent("give either a QUESTION or --queries FILE.jsonl")
            retriever, caller = runtime_for().retriever, _caller(tenant, groups)
            rows = [{"question": question}] if question is not None else _read_jsonl(queries)
            for row in rows:
                hits = retriever.search(row["question"], mode=mode, collection=collection, top_k=top_k,
                                        caller=caller)
                if as_json:
                    print(json.dumps([hit.to_json() for hit in hits]))
                else:
                    for rank, hit in enumerate(hits, start=1):
                        print(f"{rank:>2}. {hit.score:.4f}  {hit.source}  {hit.text[:100]!r}")
                sys.stdout.flush()
        except RagfnError as exc:
            fail(exc)

    @app.command()
    def ask(
        question: Annotated[str, typer.Argument(help="the question")],
        collection: str = "default",
        top_k: Annotated[int, typer.Option("--top-k")] = 8,
        mode: ModeOption = "hybrid",
        tenant: TenantOption = None,
        groups: GroupsOption = "",
        as_json: JsonOption = False,
    ) -> None:
        """Answer a question from the indexed documents, with citations (cache, retrieval, LLM, fallbacks)."""
        from ragfn.gateway.ask import AskRequest

        try:
            request = AskRequest(question=question, collection=collection, top_k=top_k, mode=mode)
            result = runtime_for().gateway.ask(request, _caller(tenant, groups))
        except RagfnError as exc:
            fail(exc)
        except ValueError as exc:  # pydantic's validation of the request
            fail(BadEvent(f"invalid question or options: {exc}"))
        if as_json:
            result["citations"] = [{"source": c["source"], "chunk_id": c["chunk_id"], "text": c["text"]}
                                   for c in result["citations"]]
            print(json.dumps(result))
            return
        print(result["answer"])
        for citation in result["citations"]:
            print(f"  [{citation['n']}] {citation['source']}")
        flags = [f"cache {result['cache']}"] + ([f"degraded: {result['degraded']}"] if result["degraded"] else []) + (
            ["sources matched by ragfn: the model cited none"] if result.get("citations_inferred") else [])
        print(f"  ({', '.join(flags)}; {sum(result['timings_ms'].values()):.0f} ms)")

    @app.command("eval")
    def evaluate(
        queries: Annotated[Path, typer.Option(help="labelled JSONL from scripts/build_eval.py")],
        collection: str = "default",
        modes: Annotated[str, typer.Option(help="comma-separated modes to compare")] = ",".join(MODES),
        tenant: TenantOption = None,
        groups: GroupsOption = "",
        as_json: JsonOption = False,
        answers: Annotated[bool, typer.Option("--answers", help="score the gateway's answers, per engine")] = False,
        unanswerable: Annotated[Optional[Path], typer.Option(
            help="with --answers: JSONL of questions the corpus does not answer (scored for abstention)")] = None,
        corpus: Annotated[Optional[Path], typer.Option(
            help="with --answers: the folder of the labelled files (default: corpus/ beside --queries)")] = None,
        limit: Annotated[Optional[int], typer.Option(min=1, help="only the first N labelled questions")] = None,
        max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, max=4096)] = 256,
        judge_url: Annotated[Optional[str], typer.Option(
            "--judge", help="with --answers: an OpenAI-compatible base URL whose model scores relevance and groundedness "
                 "(key: RAGFN_JUDGE_API_KEY)")] = None,
        judge_model: Annotated[str, typer.Option(help="the model name the judge serves")] = "ragfn",
        answers_out: Annotated[Optional[Path], typer.Option(
            help="with --answers: write every answer, what the gate withheld and its scores here (JSONL)")] = None,
    ) -> None:
        """R@1, R@5, R@10, MRR@10 and nDCG@10 of each retrieval mode on a labelled query set; with --answers,
        groundedness, correctness, citation precision, degenerate rate and abstention of each engine's answers."""
        from ragfn.retrieval.evalset import judge, load_queries
        from ragfn.retrieval.metrics import summarize

        try:
            if not queries.is_file():
                raise BadEvent(f"no such queries file: {queries}", hint="build one with scripts/build_eval.py")
            labelled = load_queries(queries)[:limit]
            if not answers and (judge_url or answers_out):
                raise BadEvent("--judge and --answers-out score answers", hint="add --answers")
            if answers:
                judge = _judge(judge_url, judge_model)  # a bad judge URL is refused before anything is loaded
                _answers(runtime_for(), labelled, unanswerable, corpus or queries.parent / "corpus",
                         collection=collection, caller=_caller(tenant, groups), max_tokens=max_tokens,
                         as_json=as_json, judge=judge, answers_out=answers_out)
                return
            retriever = runtime_for().retriever
            report = {}
            for mode in [m.strip() for m in modes.split(",") if m.strip()]:
                ranked = [judge(q, [hit.metadata for hit in retriever.search(
                    q.question, mode=mode, collection=collection, top_k=10, caller=_caller(tenant, groups))])
                    for q in labelled]
                report[mode] = summarize(ranked)
        except RagfnError as exc:
            fail(exc)
        if as_json:
            print(json.dumps({"queries": len(labelled), "modes": report}, indent=2))
            return
        print(f"{len(labelled)} queries")
        for mode, figures in report.items():
            print(f"{mode:8} " + "  ".join(f"{name} {value:.3f}" for name, value in figures.items()))


def _judge(url: str | None, model: str):
    if url is None:
        return None
    import os

    from ragfn.llm.client import OpenAIChatClient
    from ragfn.llm.judge import Judge

    return Judge(OpenAIChatClient(url, model, api_key=os.environ.get("RAGFN_JUDGE_API_KEY"), read_timeout=300))


def _answers(runtime, labelled, unanswerable: Path | None, corpus: Path, *, collection: str, caller: Caller,
             max_tokens: int, as_json: bool, judge=None, answers_out: Path | None = None) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ragfn.cli.answer_eval import engines, evaluate_answers

    missing = sorted({q.source for q in labelled if not (corpus / q.source).is_file()})
    if missing:
        raise BadEvent(f"the labelled files {', '.join(missing[:3])} are not in {corpus}",
                       hint="pass --corpus, the folder the labelled set was built from (scripts/build_eval.py)")
    if answers_out is not None and not answers_out.parent.is_dir():
        raise BadEvent(f"no folder {answers_out.parent} to write --answers-out into", hint="create it first")
    others = [row["question"] for row in _read_jsonl(unanswerable)] if unanswerable else []
    total = (len(labelled) + len(others)) * len(engines(runtime))
    try:
        rows = answers_out.open("w", encoding="utf-8") if answers_out else None
    except OSError as exc:
        raise BadEvent(f"cannot write --answers-out {answers_out}: {exc.strerror}", hint="name a file you may write")
    with Progress(TextColumn("answers"), BarColumn(), MofNCompleteColumn(), console=Console(stderr=True),
                  transient=True) as progress, contextlib.nullcontext() if rows is None else rows:
        task = progress.add_task("answers", total=total)
        report = evaluate_answers(runtime, labelled, others, collection=collection, caller=caller,
                                  max_tokens=max_tokens, corpus_dir=corpus, advance=lambda: progress.advance(task),
                                  judge=judge, record=(lambda row: rows.write(json.dumps(row) + "\n")) if rows
                                  else (lambda row: None))
    if as_json:
        print(json.dumps({"queries": len(labelled), "unanswerable": len(others), "engines": report}, indent=2))
        return
    print(f"{len(labelled)} labelled questions, {len(others)} unanswerable")
    for name, row in report.items():
        figures = {k: v for k, v in row.items()
                   if k not in ("questions", "unanswerable", "degenerate", "degraded", "gate", "judge")}
        print(f"{name:24} " + "  ".join(f"{k} {v if v is not None else '-'}" for k, v in figures.items()))
        for part in ("gate", "judge"):
            if row.get(part):
                print(f"{'':24} {part} " + "  ".join(f"{k} {v}" for k, v in row[part].items()))
        if not_own := {r: n for r, n in row["degraded"].items() if r != "ungrounded-answer"}:
            print(f"{'':24} warning: degraded answers {not_own}: those are not this engine's own "
                  "(is the predictor at RAGFN_LLM_URL up?)", file=sys.stderr)
