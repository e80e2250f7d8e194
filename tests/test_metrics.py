"""Ranking metrics: hand-computed recall@k, MRR@k and nDCG@k, edge cases and the summary."""

from __future__ import annotations

import math

import pytest

from ragfn.retrieval.metrics import first_relevant, mrr_at, ndcg_at, recall_at, summarize

pytestmark = pytest.mark.unit

F, T = False, True
AT_1 = [T] + [F] * 9
AT_3 = [F, F, T] + [F] * 7
AT_11 = [F] * 10 + [T]
NONE = [F] * 10


def test_relevant_at_rank_1_is_perfect() -> None:
    assert recall_at(1, [AT_1]) == recall_at(10, [AT_1]) == 1.0
    assert mrr_at(10, [AT_1]) == 1.0
    assert ndcg_at(10, [AT_1]) == 1.0


def test_relevant_at_rank_3() -> None:
    assert recall_at(1, [AT_3]) == 0.0
    assert recall_at(3, [AT_3]) == recall_at(5, [AT_3]) == 1.0
    assert mrr_at(10, [AT_3]) == pytest.approx(1 / 3)
    assert ndcg_at(10, [AT_3]) == pytest.approx(1 / math.log2(4))  # = 0.5
    assert mrr_at(2, [AT_3]) == ndcg_at(2, [AT_3]) == 0.0  # outside the cut-off


def test_relevant_only_at_rank_11_scores_nothing_at_10() -> None:
    assert recall_at(10, [AT_11]) == mrr_at(10, [AT_11]) == ndcg_at(10, [AT_11]) == 0.0
    assert recall_at(11, [AT_11]) == 1.0
    assert mrr_at(11, [AT_11]) == pytest.approx(1 / 11)


def test_no_relevant_item_and_empty_results_score_zero() -> None:
    for judged in ([NONE], [[]]):
        assert recall_at(10, judged) == mrr_at(10, judged) == ndcg_at(10, judged) == 0.0
    assert first_relevant(NONE) is None and first_relevant(AT_3) == 3


def test_later_hits_of_the_same_gold_earn_nothing() -> None:
    # One gold passage, two chunks of it at ranks 2 and 3: only rank 2 counts, and nDCG stays within [0, 1].
    judged = [[F, T, T, F]]
    assert ndcg_at(10, judged) == pytest.approx(1 / math.log2(3))
    assert mrr_at(10, judged) == pytest.approx(0.5)
    assert recall_at(10, judged) == 1.0
    assert ndcg_at(10, [[T, T, T]]) == 1.0


def test_means_over_queries() -> None:
    judged = [AT_1, AT_3, NONE]
    assert recall_at(1, judged) == pytest.approx(1 / 3)
    assert recall_at(5, judged) == pytest.approx(2 / 3)
    assert mrr_at(10, judged) == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert ndcg_at(10, judged) == pytest.approx((1 + 0.5 + 0) / 3)


def test_several_gold_items_per_query() -> None:
    # Two distinct gold items found at ranks 1 and 3: DCG = 1 + 1/log2(4) = 1.5, ideal = 1 + 1/log2(3).
    judged = [[T, F, T]]
    assert recall_at(1, judged, n_relevant=2) == 0.5
    assert recall_at(3, judged, n_relevant=2) == 1.0
    assert ndcg_at(10, judged, n_relevant=2) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    # Per-query counts; the ideal ranking is cut at k: with k=1 and 3 gold items, the ideal DCG is 1.
    assert recall_at(10, [[T], [T]], n_relevant=[1, 4]) == pytest.approx((1 + 0.25) / 2)
    assert ndcg_at(1, [[T, T]], n_relevant=3) == 1.0


def test_summary_keys_and_values() -> None:
    summary = summarize([AT_1, AT_3, AT_11, NONE])
    assert list(summary) == ["R@1", "R@5", "R@10", "MRR@10", "nDCG@10"]
    assert summary["R@1"] == 0.25
    assert summary["R@5"] == summary["R@10"] == 0.5
    assert summary["MRR@10"] == pytest.approx((1 + 1 / 3) / 4)
    assert summary["nDCG@10"] == pytest.approx((1 + 0.5) / 4)


@pytest.mark.parametrize("call", [
    lambda: recall_at(10, []),
    lambda: summarize([]),
    lambda: mrr_at(0, [AT_1]),
    lambda: ndcg_at(10, [AT_1, AT_3], n_relevant=[1]),
    lambda: recall_at(10, [AT_1], n_relevant=0),
])
def test_meaningless_questions_are_errors(call) -> None:
    with pytest.raises(ValueError):
        call()
