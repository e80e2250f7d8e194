"""Inferred citations for answers whose model cited nothing (ragfn.gateway.attribution), and how the gateway reports
them."""

from __future__ import annotations

import pytest

from ragfn.gateway.attribution import attribute
from ragfn.retrieval.context import Passage

pytestmark = pytest.mark.unit


def passage(number: int, text: str) -> Passage:
    return Passage(number, f"c{number}", f"file:///docs/{number}.md", "", 0, len(text), text, 1.0)


SORTING = passage(1, "To sort a list in place, call list.sort(). The sorted() built-in returns a new sorted list.")
TUPLES = passage(2, "A tuple is an immutable sequence. Create one with parentheses, such as (1, 2).")


def test_each_sentence_is_credited_to_the_passage_it_shares_most_words_with() -> None:
    answer = "You can sort the list in place with list.sort(). Tuples are immutable sequences."
    assert [p.number for p in attribute(answer, [SORTING, TUPLES])] == [1, 2]
    assert [p.number for p in attribute("Tuples are immutable sequences. Sort lists in place.", [SORTING, TUPLES])] \
        == [2, 1]  # in order of first use


def test_an_answer_that_draws_on_no_passage_gets_no_sources() -> None:
    assert attribute("A digital wallet manages financial transactions securely.", [SORTING, TUPLES]) == []
    assert attribute("Yes. No. The answer is no.", [SORTING, TUPLES]) == []
    assert attribute("", [SORTING]) == [] and attribute("Sort the list in place.", []) == []


def test_numbers_alone_do_not_make_a_source() -> None:
    # a small model's invented example shares digits with every passage that has any
    assert attribute("my_list = [1, 2, 3, 4, 5]", [TUPLES]) == []


def test_a_sentence_must_be_mostly_the_passage_s_words() -> None:
    long = "Use a list, then define custom lambda key functions returning element values by index while comparing."
    assert attribute(long, [TUPLES]) == []  # 'use' and 'list' are 2 of its 12 words


def test_on_a_tie_the_better_ranked_passage_wins() -> None:
    twin = passage(3, SORTING.text)
    assert [p.number for p in attribute("Sort the list in place.", [twin, SORTING])] == [1]


@pytest.mark.integration
def test_the_gateway_marks_inferred_sources_and_the_cache_keeps_the_mark(gateway, predictor):
    """SmolLM2 through the predictor: whatever it writes, the sources shown are its own [n] or, only when it wrote
    none, the inferred ones, flagged as such."""
    from conftest import ask

    from ragfn.llm.client import citations

    client, _ = gateway
    # the gate off: this is about the sources of the model's own answer, which the gate may replace (test_gate.py)
    app = client(RAGFN_LLM_URL=predictor.base_url, RAGFN_LLM_SERVED_NAME="smollm", RAGFN_LLM_COLD_WAIT_SECONDS="60",
                 RAGFN_ANSWER_GATE="false")
    # The cut-off answers come first: a complete 48-token answer would be cached, and the cache serves it to any
    # later ask of the same question whatever its max_tokens.
    cut = ask(app, "How do I sort a list in place?", max_tokens=4).get_json()
    assert cut["truncated"] is True and cut["degraded"] is None, cut  # 4 tokens: "To sort a list" at most
    assert ask(app, "How do I sort a list in place?", max_tokens=4).get_json()["cache"] == "miss"  # never cached
    first = ask(app, "How do I sort a list in place?", max_tokens=48).get_json()
    assert first["degraded"] is None, first
    own = citations(first["answer"], [SORTING])  # the fixture's one passage is about sorting too: [1]
    assert first["citations_inferred"] == (not own and bool(first["citations"]))
    assert first["citations"], first["answer"]  # the model's answer to this question draws on the passage
    assert first["citations"][0]["source"].endswith("lists.md")
    repeat = ask(app, "How do I sort a list in place?", max_tokens=48).get_json()
    if first["truncated"]:  # SmolLM2 often runs to max_tokens, and a cut-off answer is never cached
        assert repeat["cache"] == "miss", repeat
    else:
        assert repeat["cache"] == "hit", repeat
        assert (repeat["citations"], repeat["citations_inferred"]) == (first["citations"], first["citations_inferred"])
