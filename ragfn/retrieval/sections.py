"""Small-to-big ranking: score small chunks, rank the sections (document + heading path) they belong to.

A small chunk embeds one idea well, but an answer often spans several chunks; a section whose chunks keep turning up
is likelier to hold the answer than one with a single lucky chunk. So, with sections on, hybrid retrieval still
scores chunks, then ranks their sections and returns the best chunk of every section, best section first, then the
remaining chunks in fused order (chunks, not merged sections, so citations and the context budget work per chunk).
Returning a section's chunks together was measured too and is worse where sections are answers (the +marked sets of
bench/retrieval_sets.py): when the top section is the wrong one, its weaker chunks take the places the right
section's chunk would have had (docs/benchmarks.md).

- "max": a section scores its best chunk's fused score: the fused order with every section's second and later
  chunks moved behind the best chunk of every other section (a diversification, no section ranks differently).
- "sum": a decayed sum of its chunks' fused scores, best first, each `decay` times the weight of the one before
  (scores shifted so the weakest candidate counts 0: fused scores are z-scores and can be negative, and a negative
  chunk must not make a section worse for having it). Two good chunks beat one slightly better one.
- "fuse": section-level fusion. Each list (dense, BM25) scores a section by its best chunk *in that list*, those
  section scores are standardised per list and summed with the fusion weights; so a section whose text matches the
  question's words in one chunk and its meaning in another gets both, which chunk-level fusion cannot give it.

Only candidates the caller may read reach this module (both lists filter before ranking), so sections are built
from readable chunks only and an unreadable chunk can neither appear nor lift its section.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np

from ragfn.retrieval.dense import Hit

Sections = Literal["off", "max", "sum", "fuse"]
SECTIONS: tuple[Sections, ...] = ("off", "max", "sum", "fuse")
Key = tuple[str, str]


def section_of(hit: Hit) -> Key:
    """A chunk's section: its document and heading path (ragfn's chunks never cross a heading)."""
    return hit.source, str(hit.metadata.get("heading_path", ""))


def standardise(scores: Mapping[str, float]) -> dict[str, float]:
    """z-scores of one list's scores (hybrid's score fusion, and section-level fusion); one score, or all equal, has
    no spread to standardise by."""
    if not scores:
        return {}
    values = np.array(list(scores.values()), dtype=np.float64)
    mean, spread = values.mean(), values.std() or 1.0
    return {key: (value - mean) / spread for key, value in scores.items()}


def by_section(scores: Mapping[str, float], hits: Mapping[str, Hit], how: Sections, *, decay: float = 0.5,
               lists: Mapping[str, list[Hit]] | None = None, weights: Mapping[str, float] | None = None) -> list[str]:
    """Chunk ids of `scores` (fused, per chunk): each section's best chunk, best section first, then the rest.

    `lists` and `weights` (the ranked list per retriever and its fusion weight) are needed by "fuse" only."""
    members: dict[Key, list[str]] = defaultdict(list)
    for chunk_id in sorted(scores, key=lambda c: (-scores[c], c)):
        members[section_of(hits[chunk_id])].append(chunk_id)
    if how == "max":
        ranked = {key: scores[ids[0]] for key, ids in members.items()}
    elif how == "sum":
        floor = min(scores.values())
        ranked = {key: sum(decay ** n * (scores[c] - floor) for n, c in enumerate(ids)) for key, ids in members.items()}
    elif how == "fuse":
        if lists is None or weights is None:
            raise ValueError("section-level fusion needs the ranked lists and their weights")
        ranked = fuse_sections(lists, weights, members)
    else:
        raise ValueError(f"unknown section ranking {how!r}")
    # ties (equal section scores) go to the section with the better best chunk, then by chunk id: deterministic
    order = sorted(members, key=lambda key: (-ranked[key], -scores[members[key][0]], members[key][0]))
    heads = [members[key][0] for key in order]
    chosen = set(heads)
    return heads + [chunk_id for chunk_id in sorted(scores, key=lambda c: (-scores[c], c)) if chunk_id not in chosen]


def fuse_sections(lists: Mapping[str, list[Hit]], weights: Mapping[str, float],
                  sections: Iterable[Key]) -> dict[Key, float]:
    """Each list's best score per section, standardised over that list's sections and summed with the weights; a
    section missing from a list gets that list's lowest standardised score (as chunk-level fusion does)."""
    fused = dict.fromkeys(sections, 0.0)
    for name, ranked in lists.items():
        best: dict[Key, float] = {}
        for hit in ranked:
            key = section_of(hit)
            best[key] = max(best.get(key, hit.score), hit.score)
        standard = standardise(best)
        if not standard:
            continue
        floor = min(standard.values())
        for key in fused:
            fused[key] += weights[name] * standard.get(key, floor)
    return fused
