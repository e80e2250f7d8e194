"""The chat in a real browser: Debian's chromium, driven by npm playwright-core (tests/browser/chat.mjs), against
`ragfn dev` with SmolLM2 on llama.cpp. From an empty index: sign in, upload a document, ask, watch the answer
stream, open a citation, and keep the screenshot (build/screenshots/chat.png) with what the page said at that moment.
`scripts/browser.sh` (part of `make test`) installs chromium and playwright-core."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess

import pytest

from conftest import REPO

from ragfn.gateway.answer_quality import repetition_loop

pytestmark = pytest.mark.e2e

SORTING = ("# Sorting\n\nTo sort a list in place, call list.sort(). The sorted() built-in returns a new sorted list "
           "and leaves the original alone.\n\n## Keys\n\nBoth accept a key function, such as str.lower, that is "
           "called on each element before comparing.\n")
SCREENSHOTS = REPO / "build" / "screenshots"


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_a_new_user_gets_a_streamed_cited_answer_in_the_browser(dev_chat, tmp_path):
    document = tmp_path / "sorting.md"
    document.write_text(SORTING)
    out = tmp_path / "browser"
    out.mkdir()
    scenario = {"url": dev_chat.state["ui"], "key": dev_chat.key, "upload": str(document), "out": str(out),
                "question": "How do I sort a list in place?"}
    run = subprocess.run(["node", str(REPO / "tests" / "browser" / "chat.mjs"), json.dumps(scenario)],
                         capture_output=True, text=True, timeout=400)
    report = json.loads((out / "page.json").read_text())
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name in ("chat.png", "failure.png", "page.json"):
        if (out / name).exists():
            shutil.copy(out / name, SCREENSHOTS / name)  # for a person to look at, pass or fail
    assert run.returncode == 0, (report.get("error"), run.stderr[-2000:], report.get("page_text", "")[-2000:])

    # before the upload the chat said the index was empty; the upload went through the ingestion events
    assert report["empty_notice"] is True
    assert "sorting.md: indexed, " in report["upload_text"]
    # the answer streamed: the page showed it growing, several lengths before its final form
    growing = [text for text in report["stream"] if "⏱" not in text and scenario["question"] not in text]
    assert len(growing) >= 3, report["stream"]
    # the screenshot's moment: the whole answer, its timings, and the opened citation with its passage and source
    page = report["page_text"]
    # never a degenerate answer: the model's, when it passed the gate, or the extractive one with its badge
    assert not repetition_loop(report["answer"]), report["answer"]
    replaced = "answered from them instead" in page
    assert replaced == ("the model's answer" in report["answer"]), page
    # a replaced stream may have grown longer than the answer that took its place
    assert len(growing[0]) < len(growing[-1]) and (replaced or len(growing[-1]) <= len(report["answer"]))
    lines = [line for line in report["answer"].splitlines() if len(line) > 20 and not line.startswith("⏱")]
    assert lines and all(line in page for line in lines), (lines, page)
    assert "⏱ cache" in page and "retrieve" in page and "generate" in page
    citation = report["citation_text"]
    assert report["citation_label"].startswith("[") and "sorting.md" in report["citation_label"]
    assert "Source" in citation and "uploads/shared/default/all/sorting.md" in citation
    assert "Section" in citation and "Sorting" in citation
    passage = citation.strip().splitlines()[-1]
    assert len(passage) > 30 and passage in " ".join(SORTING.split()), citation  # the passage's own text
    width, height = png_size(out / "chat.png")
    assert width >= 1280 and height >= 600
