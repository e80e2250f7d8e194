"""How the chat labels an answer: badges for cache and degradation, the per-stage timing line, citation names."""

from __future__ import annotations

import pytest

from ragfn.core.uris import document_name
from ui.views import badges, source_link, timing_line

pytestmark = pytest.mark.unit


def test_badges_say_cache_hit_each_degradation_and_inferred_sources() -> None:
    assert badges({"cache": "miss", "degraded": None}) == []
    assert badges({"cache": "hit"}) == [("cache hit", "green")]
    assert badges({"cache": "off", "degraded": "cache-unavailable+cold-start", "citations_inferred": True}) == [
        ("cache off", "gray"), ("degraded: cache unavailable", "orange"),
        ("degraded: model warming up: answered from the passages", "orange"),
        ("sources matched by ragfn: the model cited none", "violet")]
    assert badges({"degraded": "something-new"}) == [("degraded: something-new", "orange")]  # unknown: as is
    assert badges({"cache": "miss", "truncated": True}) == [("cut off at the token limit", "gray")]
    assert badges({"cache": "miss", "degraded": "ungrounded-answer"}) == [
        ("degraded: the model's answer was not supported by the passages: answered from them instead", "orange")]
    assert badges({"cache": "miss", "model": "backup", "provider": "fallback"}) == [
        ("answered by the fallback model backup", "blue")]


def test_the_timing_line_names_each_stage_and_the_total() -> None:
    assert timing_line({"cache": 3.2, "retrieve": 41.0, "generate": 1200.0}) == \
        "cache 3 ms · retrieve 41 ms · generate 1.20 s · total 1.24 s"
    assert timing_line({"cache": 1.0, "cache_store": 2.0}) == "cache 1 ms · cache write 2 ms · total 3 ms"
    assert timing_line({}) == ""


def test_sources_link_when_a_browser_can_open_them() -> None:
    assert source_link("https://docs.example.com/a.html") == "[https://docs.example.com/a.html](https://docs.example.com/a.html)"
    assert source_link("s3://bucket/team docs/faq.md") == "`s3://bucket/team docs/faq.md`"
    assert document_name("file:///srv/docs/sorting.md") == "sorting.md" and document_name("gs://b/") == "b"
