"""The groundedness gate: a generated answer is checked before it is final, cheaply and with no model.

A model's answer fails the gate when it is
    empty        no content words;
    repetition   a loop (`answer_quality.repetition_loop`: the same run of tokens four times back to back, or mostly
                 repeated 4-grams), watched for token by token while it streams, so generation stops at the loop
                 instead of at max_tokens;
                 or a sentence said twice (`answer_quality.restated`);
    cut-off      stopped at max_tokens: incomplete (by default; with `keep_cut_offs`, only when no sentence of it is
                 supported: nothing useful was said);
    unsupported  fewer than `min_groundedness` of its sentences are supported by the passages it cites, or that
                 ragfn credited to it (`answer_quality.groundedness`, attribution's support rule).
The gateway then shows the extractive answer from the same passages instead, marked degraded "ungrounded-answer"
with the reason in the final record; a stream is corrected by a `replace` event (docs/query.md). Such an answer is
degraded, so it is never cached. The figures behind the threshold: docs/benchmarks.md, "The groundedness gate".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ragfn.gateway.answer_quality import TOKEN, LoopDetector, degenerate, groundedness, restated

UNGROUNDED = "ungrounded-answer"
MAX_PENDING = 64  # characters of an unfinished token held back for the next delta
REASONS = {
    "empty": "the model's answer was empty",
    "repetition": "the model's answer repeated itself in a loop",
    "cut-off": "the model's answer was cut off at the token limit",
    "unsupported": "the model's answer is not supported by the passages",
}


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reason: str | None = None  # a key of REASONS when it failed
    groundedness: float | None = None  # None: no sentence had enough content words to judge

    @property
    def message(self) -> str:
        return f"{REASONS[self.reason]}; answering from the passages" if self.reason else ""

    def to_json(self) -> dict:
        grounded = None if self.groundedness is None else round(self.groundedness, 4)
        return {"passed": self.passed, "reason": self.reason, "groundedness": grounded}


@dataclass(frozen=True)
class AnswerGate:
    """`min_groundedness`: the share of an answer's judged sentences that must be supported (0 turns that check off,
    leaving loops, empty answers and cut-offs). `keep_cut_offs`: an answer cut off at max_tokens passes when it
    said something supported and meets the share; by default it fails, because on both labelled sets every such
    SmolLM2 answer scored below the extractive answer to the same question (docs/benchmarks.md)."""

    min_groundedness: float = 0.5
    keep_cut_offs: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_groundedness <= 1.0:
            raise ValueError(f"min_groundedness must lie in [0, 1], not {self.min_groundedness}")

    def check(self, answer: str, cited: Mapping[int, str], *, truncated: bool) -> GateVerdict:
        """`cited`: the text of each passage the answer cites or was credited, by its [n]."""
        kind = degenerate(answer, truncated=False) or ("repetition" if restated(answer) else None)
        if kind:
            return GateVerdict(False, kind)
        share = groundedness(answer, cited)
        if truncated and not (self.keep_cut_offs and share):  # share None: nothing judgeable; 0.0: nothing supported
            return GateVerdict(False, "cut-off", share)
        if share is not None and share < self.min_groundedness:
            return GateVerdict(False, "unsupported", share)
        return GateVerdict(True, None, share)


class LoopWatch:
    """Follows a stream's deltas and says when the text so far has become a repetition loop. A delta may end inside
    a word, so the last token waits for the next delta before it counts; each token is looked at once."""

    def __init__(self) -> None:
        self.detector, self.pending = LoopDetector(), ""

    def add(self, delta: str) -> bool:
        text = self.pending + delta
        tokens = TOKEN.findall(text)
        self.pending = tokens.pop() if tokens and not text[-1].isspace() else ""
        if len(self.pending) > MAX_PENDING:  # "-----..." one delta at a time: count it now, not re-read it forever
            tokens.append(self.pending)
            self.pending = ""
        for token in tokens:
            self.detector.add(token)
        return self.detector.looping()
