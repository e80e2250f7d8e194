"""The extractive engine: an answer made of the passages' own sentences, cited as [n]; deterministic, no model.

It answers when no LLM can (cold, down, or not deployed), so it must never invent text: every sentence it returns
is copied from a numbered passage, and every sentence carries that passage's citation.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from ragfn.retrieval.context import Passage
from ragfn.retrieval.lexical import query_terms, tokenize

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(\[])|\n\s*\n")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and len(s.strip()) > 2]


def extractive_answer(question: str, passages: list[Passage], *, max_sentences: int = 3) -> str:
    """The sentences that share the most (rare) words with the question, in reading order, each cited."""
    terms = set(query_terms(question))  # stemmed content words, as BM25 sees them
    candidates = [(p.number, i, s) for p in passages for i, s in enumerate(sentences(p.text))]
    if not candidates:
        return "I could not find anything about that in the documents."
    # idf over the candidate sentences, so words every sentence shares count for little
    frequency = Counter(t for _, _, s in candidates for t in set(tokenize(s)))
    idf = {t: math.log(1 + len(candidates) / frequency[t]) for t in frequency}
    scored = []
    for rank, (number, position, sentence) in enumerate(candidates):
        words = set(tokenize(sentence))
        score = sum(idf.get(t, 0.0) for t in terms & words)
        scored.append((score, -rank, number, position, sentence))
    best, seen = [], set()
    for row in sorted(scored, reverse=True):
        if row[0] > 0 and row[4] not in seen:  # overlapping chunks repeat sentences; say each once
            best.append(row)
            seen.add(row[4])
        if len(best) == max_sentences:
            break
    if not best:  # nothing overlaps: fall back to the opening of the best-ranked passage, still cited
        first = passages[0]
        return f"{sentences(first.text)[0]} [{first.number}]"
    ordered = sorted(best, key=lambda row: (row[2], row[3]))
    return " ".join(f"{sentence} [{number}]" for _, _, number, _, sentence in ordered)
