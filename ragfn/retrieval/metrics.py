"""Ranking metrics over judged result lists: recall@k, MRR@k and nDCG@k with binary relevance."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Every function takes `relevant_ranks`: one list per query, where `relevant_ranks[q][i]` is True when the item at
# rank i + 1 of query q's results is relevant (`ragfn.retrieval.evalset.judge` produces them), and returns the mean over
# queries. A query whose list is empty or holds no relevant item scores 0; the mean of no queries is a ValueError
# rather than a silent 0, because it always means the evaluation went wrong.
#
# Relevance is binary and its unit is the *gold passage*, not the chunk: the FAQ set has one gold section per query,
# and several chunks of it in the results are several views of one relevant item. So by default (n_relevant=1)
# recall@k is 1 when any relevant item is in the top k (hit rate), MRR@k is 1/rank of the first one, and nDCG@k
# assumes one relevant item (see ndcg_at). For lists whose relevant items are distinct gold items, pass
# n_relevant, the number of gold items per query (one int, or one per query); the caller must then judge each gold
# item at most once per list.
Judged = Sequence[Sequence[bool]]
Counts = int | Sequence[int]


def _gold_counts(relevant_ranks: Judged, n_relevant: Counts) -> list[int]:
    if not relevant_ranks:
        raise ValueError("no queries to evaluate")
    counts = [n_relevant] * len(relevant_ranks) if isinstance(n_relevant, int) else list(n_relevant)
    if len(counts) != len(relevant_ranks) or any(n < 1 for n in counts):
        raise ValueError("n_relevant needs one count >= 1 per query")
    return counts


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, not {k}")


def first_relevant(ranked: Sequence[bool]) -> int | None:
    """The 1-based rank of the first relevant item, or None."""
    return next((rank for rank, relevant in enumerate(ranked, 1) if relevant), None)


def recall_at(k: int, relevant_ranks: Judged, n_relevant: Counts = 1) -> float:
    """Mean over queries of (relevant items in the top k, at most n_relevant) / n_relevant: with one gold passage
    per query, the fraction of queries with a relevant item in their top k."""
    _check_k(k)
    counts = _gold_counts(relevant_ranks, n_relevant)
    found = [min(sum(map(bool, ranked[:k])), n) / n for ranked, n in zip(relevant_ranks, counts, strict=True)]
    return sum(found) / len(found)


def mrr_at(k: int, relevant_ranks: Judged) -> float:
    """Mean reciprocal rank of the first relevant item within the top k (0 when there is none)."""
    _check_k(k)
    _gold_counts(relevant_ranks, 1)
    ranks = [first_relevant(ranked[:k]) for ranked in relevant_ranks]
    return sum(1 / rank for rank in ranks if rank) / len(ranks)


def ndcg_at(k: int, relevant_ranks: Judged, n_relevant: Counts = 1) -> float:
    """Mean normalised discounted cumulative gain at k, with binary gains and a log2 discount.

    The ideal ranking puts min(n_relevant, k) relevant items first, and only the first n_relevant hits earn gain:
    with the default of one gold passage per query the ideal DCG is 1 and nDCG = 1/log2(1 + first relevant rank);
    later chunks of the same passage are duplicates and earn nothing, so nDCG stays within [0, 1]."""
    _check_k(k)
    counts = _gold_counts(relevant_ranks, n_relevant)
    total = 0.0
    for ranked, n in zip(relevant_ranks, counts, strict=True):
        hits = [rank for rank, relevant in enumerate(ranked[:k], 1) if relevant][:n]  # duplicates earn nothing
        ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(n, k) + 1))
        total += sum(1 / math.log2(rank + 1) for rank in hits) / ideal
    return total / len(counts)


def summarize(results: Judged, n_relevant: Counts = 1) -> dict[str, float]:
    """R@1, R@5, R@10, MRR@10 and nDCG@10 of per-query judged result lists (ranks past 10 are ignored)."""
    return {
        "R@1": recall_at(1, results, n_relevant),
        "R@5": recall_at(5, results, n_relevant),
        "R@10": recall_at(10, results, n_relevant),
        "MRR@10": mrr_at(10, results),
        "nDCG@10": ndcg_at(10, results, n_relevant),
    }
