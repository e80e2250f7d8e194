"""Offline checks of an answer a person reads: groundedness, correctness against gold, citations, degeneration.

No judge model: every measure compares stemmed content words (`ragfn.gateway.attribution.words`), so the same answer
scores the same everywhere. The definitions (docs/benchmarks.md, "Answer quality"):

- groundedness: of the answer's sentences with at least MIN_SHARED content words, the share supported by a passage
  it cites: the sentence's own [n] passages when it has markers, else any passage the answer cites (or that ragfn
  credited to it). Supported means attribution's rule: at least MIN_SHARED shared words, at least MIN_SHARE of the
  sentence's own. None when no sentence has enough words to judge.
- correctness: token F1 between the answer's and the gold section's content-word sets; `gold_recall` is the share
  of the gold section's content words that the answer contains.
- citation precision: the share of cited passages that lie inside the gold section (`evalset.is_relevant`).
- degenerate: "empty" (no content words), "repetition" (a loop, see `repetition_loop`), or "cut-off" (generation
  stopped at max_tokens).
- abstained: the answer says the documents do not answer it (`ABSTENTION`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ragfn.gateway.attribution import MIN_SHARED, supports, words
from ragfn.llm.extractive import sentences

LOOP_REPEATS = 4  # the same run of tokens this many times back to back is a loop
LOOP_MAX_RUN = 12  # the longest run (in tokens) looked for
DISTINCT_MIN_TOKENS = 40  # below this an answer is too short to judge by its share of distinct 4-grams
DISTINCT_MIN_SHARE = 0.5
RESTATED_MIN_WORDS = 5  # sentences shorter than this are not compared: "It returns None." twice is no restatement
RESTATED_SHARE = 0.8
TOKEN = re.compile(r"\w+|[^\w\s]+")  # also `ragfn.gateway.gate.LoopWatch`'s tokens
_CITE = re.compile(r"\[(\d{1,3})\]")
_TRAILING_CITES = re.compile(r"([.!?])((?:\s*\[\d{1,3}\])+)")
_ABSTAINING = (r"(?:is|are|was|were) not (?:in|covered|mentioned|described|answered)",
               r"(?:could|can)(?: not|not|n't) (?:find|answer|tell|be answered)", r"not (?:found )?in the documents",
               r"(?:do|does)(?: not|n't) (?:say|mention|cover|contain|answer)", r"no information", r"not enough information",
               r"(?:don't|do not) know")
ABSTENTION = re.compile(r"\b(?:" + "|".join(_ABSTAINING) + r")\b", re.IGNORECASE)


@dataclass(frozen=True)
class AnswerScore:
    groundedness: float | None
    correctness: float  # token F1 with the gold section (0.0 without gold)
    gold_recall: float
    citation_precision: float | None  # None: nothing cited
    degenerate: str | None  # "empty" | "repetition" | "cut-off"
    abstained: bool


def repetition_loop(text: str) -> bool:
    """A run of 1 to LOOP_MAX_RUN tokens repeated LOOP_REPEATS times back to back ("delete[] arr; delete[] arr; ..."),
    or, in an answer of DISTINCT_MIN_TOKENS tokens or more, fewer than DISTINCT_MIN_SHARE of its 4-grams distinct
    (a loop whose turns vary a little)."""
    detector = LoopDetector()
    for token in TOKEN.findall(text):
        detector.add(token)
    return detector.looping()


class LoopDetector:
    """`repetition_loop` token by token, for a stream: each token costs at most LOOP_MAX_RUN * LOOP_REPEATS
    comparisons, so watching a whole answer is linear in its length, not a rescan per check."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.grams: set[tuple[str, ...]] = set()
        self.back_to_back = False

    def add(self, token: str) -> None:
        tokens = self.tokens
        tokens.append(token.lower())
        n = len(tokens)
        if n >= 4:
            self.grams.add(tuple(tokens[-4:]))
        for size in range(1, LOOP_MAX_RUN + 1):  # only runs that end at this token are new
            if self.back_to_back or size * LOOP_REPEATS > n:
                break
            run = tokens[n - size:]
            if all(tokens[n - (k + 1) * size:n - k * size] == run for k in range(1, LOOP_REPEATS)):
                # "....." or "!!!!" alone is punctuation, not a loop
                self.back_to_back = size > 1 or run[0].isalnum()

    def looping(self) -> bool:
        n = len(self.tokens)
        return self.back_to_back or (n >= DISTINCT_MIN_TOKENS and len(self.grams) < DISTINCT_MIN_SHARE * (n - 3))


def restated(text: str) -> bool:
    """Whether two sentences of RESTATED_MIN_WORDS content words or more share at least RESTATED_SHARE of the shorter
    one's: the answer says the same thing twice ("X is a free operating system based on GNU. X is ... a free
    operating system based on GNU."), a loop of two turns that `repetition_loop` does not count."""
    seen: list[set[str]] = []
    for sentence in answer_sentences(text):
        terms = words(sentence)
        if len(terms) < RESTATED_MIN_WORDS:
            continue
        if any(len(terms & other) >= RESTATED_SHARE * min(len(terms), len(other)) for other in seen):
            return True
        seen.append(terms)
    return False


def degenerate(answer: str, *, truncated: bool) -> str | None:
    if not words(answer):
        return "empty"
    if repetition_loop(answer):
        return "repetition"
    return "cut-off" if truncated else None


def answer_sentences(answer: str) -> list[str]:
    """The answer's sentences, each with the [n] markers written after its full stop ("... list. [1] Next")."""
    return sentences(_TRAILING_CITES.sub(lambda m: m[2] + m[1], answer))


def groundedness(answer: str, cited: Mapping[int, str]) -> float | None:
    """`cited`: the text of each passage the answer cites or was credited, by its [n]."""
    judged = [(s, terms) for s in answer_sentences(answer) if len(terms := words(s)) >= MIN_SHARED]
    if not judged:
        return None
    vocabulary = {n: words(text) for n, text in cited.items()}  # each passage's words once, not once a sentence
    ok = 0
    for sentence, terms in judged:
        own = [vocabulary[int(n)] for n in _CITE.findall(sentence) if int(n) in vocabulary]
        ok += any(supports(len(terms & known), len(terms)) for known in own or vocabulary.values())
    return ok / len(judged)


def overlap(answer: str, gold: str) -> tuple[float, float]:
    """(token F1, gold recall) of the answer's content words against the gold section's."""
    mine, theirs = words(answer), words(gold)
    common = len(mine & theirs)
    if not common:
        return 0.0, 0.0
    precision, recall = common / len(mine), common / len(theirs)
    return 2 * precision * recall / (precision + recall), recall


def score(answer: str, citations: list[Mapping], *, truncated: bool, gold: str = "",
          relevant: Iterable[bool] = ()) -> AnswerScore:
    """One answer as the gateway returned it: its text, its citations ({"n", "text", ...}), whether it was cut off;
    `gold` the gold section's text and `relevant` one verdict per citation (empty for an unanswerable question)."""
    verdicts = list(relevant)
    f1, recall = overlap(answer, gold) if gold else (0.0, 0.0)
    return AnswerScore(groundedness(answer, {int(c["n"]): str(c["text"]) for c in citations}), f1, recall,
                       sum(verdicts) / len(verdicts) if verdicts else None, degenerate(answer, truncated=truncated),
                       bool(ABSTENTION.search(answer)))
