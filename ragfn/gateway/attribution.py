"""Sources for an answer whose model cited none: the passages its sentences are built from, by shared content words.

Small models (SmolLM2-135M, the offline CPU model) seldom write the [n] markers the prompt asks for, although their
answers are often drawn from the passages. An answer shown without sources cannot be checked, so the gateway
attributes it instead, and says so (`citations_inferred`). A sentence supports a passage when at least
`MIN_SHARED` of its stemmed content words occur in the passage and they are at least `MIN_SHARE` of its own:

    >>> from ragfn.retrieval.context import Passage
    >>> passage = Passage(1, "c1", "file:///docs/lists.md", "Lists", 0, 60,
    ...                   "To sort a list in place, call list.sort().", 1.0)
    >>> [p.number for p in attribute("Call sort() to sort the list in place.", [passage])]
    [1]
    >>> attribute("A digital wallet manages financial transactions.", [passage])
    []
"""

from __future__ import annotations

import re

from ragfn.retrieval.context import Passage
from ragfn.retrieval.lexical import query_terms

MIN_SHARED = 2
MIN_SHARE = 0.5
_SENTENCE = re.compile(r"(?<=[.!?:])\s+|\n+")


def words(text: str) -> set[str]:
    """Stemmed content words without bare numbers: a small model's made-up example lists share digits with anything."""
    return {term for term in query_terms(text) if not term.isdigit()}


def supports(shared: int, terms: int) -> bool:
    """Whether a sentence of `terms` content words, `shared` of them in a passage, is drawn from that passage."""
    return shared >= MIN_SHARED and shared >= MIN_SHARE * terms


def attribute(answer: str, passages: list[Passage]) -> list[Passage]:
    """The passages that some sentence of `answer` draws on, in order of first use; [] when none does."""
    vocabulary = {p.number: words(p.text) for p in passages}
    by_number = {p.number: p for p in passages}
    used: dict[int, Passage] = {}
    for sentence in _SENTENCE.split(answer):
        terms = words(sentence)
        if len(terms) < MIN_SHARED:
            continue
        # the most shared words wins; on a tie the better-ranked (lower-numbered) passage
        shared, number = max(((len(terms & known), -n) for n, known in vocabulary.items()), default=(0, 0))
        number = -number
        if supports(shared, len(terms)) and number not in used:
            used[number] = by_number[number]
    return list(used.values())
