"""Neighbour-window scoring (local small-to-big): a chunk counts a share of its adjacent chunks' scores.

An answer usually spans a few adjacent chunks, so a chunk whose neighbour also matches the question is likelier to be
inside the answer than an isolated chunk with a slightly higher score of its own. With a window on, hybrid retrieval
scores every candidate chunk by

    s_i + beta * max(s_{i-1}, s_{i+1})     ("max")   or   s_i + beta * (s_{i-1} + s_{i+1}) / 2     ("mean")

where s is the fused score and i-1, i+1 are the chunks numbered just before and after it in the same version of the
same document (chunk numbers run through a whole document, across headings). A neighbour that is not among the
candidates counts as the pool's lowest fused score, as chunk-level fusion does for a chunk missing from one list; so
the bonus is never negative relative to an isolated chunk, and no chunk is fetched that retrieval did not return.
Sections (ragfn.retrieval.sections) are based on headings, which in documents without per-answer headings make a
section a whole chapter; a window needs no headings at all.

Only candidates the caller may read reach this module (both lists filter before ranking), so an unreadable chunk can
neither appear nor lift its neighbour.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from ragfn.retrieval.dense import Hit

Pool = Literal["max", "mean"]
POOLS: tuple[Pool, ...] = ("max", "mean")
Place = tuple[str, str, int]


def place_of(hit: Hit) -> Place | None:
    """Where a chunk sits: (document, version, chunk number); None when its metadata cannot say."""
    meta = hit.metadata
    number = meta.get("number")
    if number is None or isinstance(number, bool):
        return None
    try:
        number = int(number)
    except (TypeError, ValueError):
        return None
    return str(meta.get("document_id", hit.source)), str(meta.get("version", "")), number


def windowed(scores: Mapping[str, float], hits: Mapping[str, Hit], beta: float, pool: Pool = "max") -> dict[str, float]:
    """Each chunk's score plus `beta` times its neighbours' scores (their max, or their mean), a missing neighbour
    counting as the lowest score of the pool. `beta` 0 returns the scores unchanged."""
    if pool not in POOLS:
        raise ValueError(f"unknown neighbour pooling {pool!r}")
    if not scores or not beta:
        return dict(scores)
    floor = min(scores.values())
    places = {chunk_id: place_of(hits[chunk_id]) for chunk_id in scores}
    where = {place: chunk_id for chunk_id, place in places.items() if place is not None}
    result = {}
    for chunk_id, score in scores.items():
        place = places[chunk_id]
        if place is None:
            neighbours = [floor, floor]
        else:
            doc, version, number = place
            neighbours = [scores[where[key]] if (key := (doc, version, number + step)) in where else floor
                          for step in (-1, 1)]
        bonus = max(neighbours) if pool == "max" else sum(neighbours) / 2
        result[chunk_id] = score + beta * bonus
    return result
