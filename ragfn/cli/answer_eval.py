"""`ragfn eval --answers`: every labelled question through the real gateway path, each engine's answers scored.

The gateway is the one `ragfn ask` runs (retrieve, prompt, LLM, citations, attribution), without the cache, so each
engine answers every question itself. Engines: the extractive engine always, as the baseline of the same run, and
the predictor at RAGFN_LLM_URL when one is set (llama.cpp, vLLM or an OpenAI-compatible upstream).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable

from ragfn.gateway.answer_quality import AnswerScore, score
from ragfn.gateway.ask import AskRequest, Gateway
from ragfn.gateway.backends import Lookup, gateway_breaker
from ragfn.llm.client import LLM, ExtractiveLLM
from ragfn.retrieval.dense import Caller
from ragfn.retrieval.evalset import EvalQuery, is_relevant, read_source
from ragfn.serve.runtime import Runtime


class NoAnswerCache:
    """The cache switched off: an evaluation measures the engine, never an answer stored by an earlier run."""

    remote = False

    def __init__(self) -> None:
        self.breaker = gateway_breaker("cache")

    def lookup(self, question, key) -> Lookup:
        return Lookup("off")

    def store(self, question, key, answer, documents, lookup) -> bool:
        return False


def engines(runtime: Runtime) -> dict[str, LLM]:
    found: dict[str, LLM] = {"extractive": ExtractiveLLM()}
    if runtime.settings.llm_url:
        found[f"llm:{runtime.llm.name}"] = runtime.llm
    return found


def gold_text(query: EvalQuery, corpus: dict[str, str]) -> str:
    return "\n".join(corpus[query.source][start:end] for start, end in query.gold)


def evaluate_answers(runtime: Runtime, labelled: list[EvalQuery], unanswerable: list[str], *, collection: str,
                     caller: Caller, max_tokens: int, corpus_dir, advance: Callable[[], None] = lambda: None) -> dict:
    """{engine: summary} over `labelled` (scored against gold) and `unanswerable` (scored for abstention)."""
    corpus = {name: read_source(corpus_dir / name) for name in sorted({q.source for q in labelled})}
    report = {}
    for name, llm in engines(runtime).items():
        gateway = Gateway(llm, retrieval=runtime.local_retrieval, cache=NoAnswerCache())
        answered, abstained, latencies, degraded = [], [], [], []
        for query in labelled:
            result, seconds = _ask(gateway, query.question, collection, caller, max_tokens)
            degraded.append(result["degraded"])
            verdicts = [is_relevant(query, c["source"], int(c["start"]), int(c["end"])) for c in result["citations"]]
            answered.append(score(result["answer"], result["citations"], truncated=result["truncated"],
                                  gold=gold_text(query, corpus), relevant=verdicts))
            latencies.append(seconds)
            advance()
        for question in unanswerable:
            result, seconds = _ask(gateway, question, collection, caller, max_tokens)
            degraded.append(result["degraded"])
            abstained.append(score(result["answer"], result["citations"], truncated=result["truncated"]).abstained)
            latencies.append(seconds)
            advance()
        report[name] = summarize(answered, abstained, latencies, degraded)
    return report


def _ask(gateway: Gateway, question: str, collection: str, caller: Caller, max_tokens: int) -> tuple[dict, float]:
    started = time.perf_counter()
    result = gateway.ask(AskRequest(question=question[:4000], collection=collection, max_tokens=max_tokens), caller)
    return result, time.perf_counter() - started


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.fmean(known), 4) if known else None


def summarize(answered: list[AnswerScore], abstained: list[bool], latencies: list[float],
              degraded: list[str | None] = ()) -> dict:
    """The engine's means; `degraded` counts answers the gateway did not get from the engine (llm-unavailable:
    the extractive fallback wrote them), so a figure never passes for the engine's when it is not."""
    kinds = [s.degenerate for s in answered]
    reasons = [r for reason in degraded if reason for r in reason.split("+")]
    return {
        "questions": len(answered), "unanswerable": len(abstained),
        "groundedness": _mean(s.groundedness for s in answered),
        "correctness": _mean(s.correctness for s in answered),
        "gold_recall": _mean(s.gold_recall for s in answered),
        "citation_precision": _mean(s.citation_precision for s in answered),
        "degenerate_rate": round(sum(k is not None for k in kinds) / len(kinds), 4) if kinds else None,
        "degenerate": {kind: kinds.count(kind) for kind in ("repetition", "cut-off", "empty")},
        "abstention": round(sum(abstained) / len(abstained), 4) if abstained else None,
        "false_abstention": round(sum(s.abstained for s in answered) / len(answered), 4) if answered else None,
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "degraded": {reason: reasons.count(reason) for reason in sorted(set(reasons))},
    }

