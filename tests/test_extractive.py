"""The extractive engine: copied sentences only, always cited, deterministic."""

from __future__ import annotations

import re

import pytest

from ragfn.llm.extractive import extractive_answer, sentences
from ragfn.retrieval.context import Passage

pytestmark = pytest.mark.unit


def passage(number: int, text: str) -> Passage:
    return Passage(number, f"c{number}", f"file:///doc{number}.md", "", 0, len(text), text, 1.0 / number)


PASSAGES = [
    passage(1, "Lists are mutable sequences. To sort a list in place, call list.sort(). It returns None."),
    passage(2, "The sorted() built-in returns a new sorted list from any iterable. The original is unchanged."),
    passage(3, "Dictionaries map keys to values. They keep insertion order."),
]


def test_answers_with_cited_sentences_copied_from_the_passages():
    answer = extractive_answer("How do I sort a list?", PASSAGES)
    cited = re.findall(r"(.+?) \[(\d)\]", answer)
    assert cited and all(sentence.strip() in PASSAGES[int(n) - 1].text for sentence, n in cited)
    assert "[1]" in answer and "[3]" not in answer
    assert extractive_answer("How do I sort a list?", PASSAGES) == answer  # deterministic


def test_falls_back_to_the_top_passage_and_says_when_there_is_nothing():
    assert extractive_answer("quantum chromodynamics", PASSAGES) == "Lists are mutable sequences. [1]"
    assert extractive_answer("anything", []) == "I could not find anything about that in the documents."


def test_sentence_split_keeps_code_and_abbreviations_reasonable():
    assert sentences("Call list.sort(). It returns None.\n\nNext paragraph") == [
        "Call list.sort().", "It returns None.", "Next paragraph"]
