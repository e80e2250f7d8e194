"""`ragfn eval --answers`: every labelled question through the real gateway path, each engine's answers scored.

The gateway is the one `ragfn ask` runs (retrieve, prompt, LLM, citations, attribution), without the cache, so each
engine answers every question itself. Engines: the extractive engine always, as the baseline of the same run, and
the predictor at RAGFN_LLM_URL when one is set (llama.cpp, vLLM or an OpenAI-compatible upstream).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from ragfn.core.errors import RagfnError
from ragfn.gateway.answer import Prepared
from ragfn.gateway.answer_quality import AnswerScore, score
from ragfn.gateway.ask import AskRequest, Gateway
from ragfn.gateway.backends import Lookup, gateway_breaker
from ragfn.gateway.gate import UNGROUNDED
from ragfn.llm.client import LLM, ExtractiveLLM
from ragfn.llm.judge import RUBRIC_VERSION, Judge, Verdict
from ragfn.retrieval.dense import Caller
from ragfn.retrieval.evalset import EvalQuery, is_relevant, read_source
from ragfn.serve.runtime import Runtime

log = logging.getLogger("ragfn.eval")


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
                     caller: Caller, max_tokens: int, corpus_dir, advance: Callable[[], None] = lambda: None,
                     judge: Judge | None = None, record: Callable[[dict], None] = lambda row: None) -> dict:
    """{engine: summary} over `labelled` (scored against gold) and `unanswerable` (scored for abstention).

    A model is asked once, through a gateway with the groundedness gate (when RAGFN_ANSWER_GATE is on): its
    "gate on" row scores what users are shown, its "gate off" row the model's own answers, the ones the gate
    withheld included. `gate` says what the gate did: answers it caught (by reason), and good answers it wrongly
    refused (not degenerate, and at least the extractive answer's F1 on the same question). With a `judge`, each
    row also has the judge model's mean relevance and groundedness of its answers (each distinct answer judged
    once). `record` receives one row per answer (question, engine, what was shown, what the gate withheld, the
    scores) for `--answers-out`."""
    corpus = {name: read_source(corpus_dir / name) for name in sorted({q.source for q in labelled})}
    report, baseline, verdicts = {}, [], Verdicts(judge)
    for name, llm in engines(runtime).items():
        gate = runtime.answer_gate if name != "extractive" else None
        gateway = Gateway(llm, retrieval=runtime.local_retrieval, cache=NoAnswerCache(), gate=gate,
                          prompt_version=runtime.settings.prompt_version)
        shown, own = Scores(), Scores()
        refused, reasons, gate_ms = [], [], []
        for i, query in enumerate(labelled):
            result, prepared, seconds = _ask(gateway, query.question, collection, caller, max_tokens)
            gold = gold_text(query, corpus)
            shown.add(_score(result, query, gold), result["degraded"], seconds)
            original = _score(prepared.withheld, query, gold) if prepared.withheld else shown.answered[-1]
            own.add(original, _degraded_by_model(result["degraded"]), seconds)
            record({"id": query.id, "question": query.question, "engine": name, "answer": result["answer"],
                    "degraded": result["degraded"], "gate": result["gate"], "withheld": (prepared.withheld or {}).get(
                        "answer"), "shown": asdict(shown.answered[-1]), "own": asdict(original)})
            if judge is not None:
                shown.judged(verdicts.of(query.question, result["answer"], prepared.passages))
                own.judged(verdicts.of(query.question, (prepared.withheld or result)["answer"], prepared.passages))
            if name == "extractive":
                baseline.append(original.correctness)
            if prepared.gate is not None:
                gate_ms.append(prepared.timings_ms.get("gate", 0.0))
                if not prepared.gate.passed:
                    reasons.append(prepared.gate.reason)
                    good = original.degenerate is None and i < len(baseline) and original.correctness >= baseline[i]
                    refused.append(good)
            advance()
        for question in unanswerable:
            result, prepared, seconds = _ask(gateway, question, collection, caller, max_tokens)
            shown.abstain(score(result["answer"], result["citations"], truncated=result["truncated"]).abstained)
            withheld = prepared.withheld or result
            own.abstain(score(withheld["answer"], withheld["citations"], truncated=withheld["truncated"]).abstained)
            advance()
        if gate is None:
            report[name] = shown.summary()
            continue
        report[f"{name} (gate off)"] = own.summary()
        report[f"{name} (gate on)"] = shown.summary() | {"gate": {
            "caught": len(reasons), "reasons": {r: reasons.count(r) for r in sorted(set(reasons))},
            "good_refused": sum(refused), "min_groundedness": gate.min_groundedness,
            "latency_p50_ms": round(statistics.median(gate_ms), 3) if gate_ms else None}}
    return report


def _degraded_by_model(reason: str | None) -> str | None:
    """The degradations of the model's own answer: the gate's is not one of them."""
    kept = [r for r in (reason or "").split("+") if r and r != UNGROUNDED]
    return "+".join(kept) or None


def _score(result: dict, query: EvalQuery, gold: str) -> AnswerScore:
    verdicts = [is_relevant(query, c["source"], int(c["start"]), int(c["end"])) for c in result["citations"]]
    return score(result["answer"], result["citations"], truncated=result["truncated"], gold=gold, relevant=verdicts)


class Verdicts:
    """The judge's verdicts, each distinct (question, answer) asked once; a judge that fails is counted, not
    scored."""

    def __init__(self, judge: Judge | None) -> None:
        self.judge, self.seen = judge, {}

    def of(self, question: str, answer: str, passages) -> Verdict | None:
        if (question, answer) not in self.seen:
            try:
                self.seen[question, answer] = self.judge.verdict(question, answer, passages)
            except RagfnError as exc:
                log.warning("the judge failed on %r: %s", question[:80], exc)
                self.seen[question, answer] = None
        return self.seen[question, answer]


@dataclass
class Scores:
    """One engine's answers as they come: scores, abstentions, latencies and degradations."""

    answered: list[AnswerScore] = field(default_factory=list)
    abstained: list[bool] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    degraded: list[str | None] = field(default_factory=list)
    verdicts: list[Verdict | None] = field(default_factory=list)

    def judged(self, verdict: Verdict | None) -> None:
        self.verdicts.append(verdict)

    def add(self, scored: AnswerScore, degraded: str | None, seconds: float) -> None:
        self.answered.append(scored)
        self.degraded.append(degraded)
        self.latencies.append(seconds)

    def abstain(self, abstained: bool) -> None:
        self.abstained.append(abstained)

    def summary(self) -> dict:
        summary = summarize(self.answered, self.abstained, self.latencies, self.degraded)
        if self.verdicts:
            parsed = [v for v in self.verdicts if v is not None and v.parsed]
            summary["judge"] = {"rubric": RUBRIC_VERSION, "judged": len(parsed),
                                "unparsed": sum(v is not None and not v.parsed for v in self.verdicts),
                                "failed": sum(v is None for v in self.verdicts),
                                "relevance": _mean(v.relevance for v in parsed),
                                "groundedness": _mean(v.groundedness for v in parsed)}
        return summary


def _ask(gateway: Gateway, question: str, collection: str, caller: Caller,
         max_tokens: int) -> tuple[dict, Prepared, float]:
    started, prepared = time.perf_counter(), Prepared()
    result = gateway.ask(AskRequest(question=question[:4000], collection=collection, max_tokens=max_tokens), caller,
                         prepared=prepared)
    return result, prepared, time.perf_counter() - started


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

