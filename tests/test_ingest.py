"""`ragfn ingest` and `ragfn stats` as a user runs them: real files, the real model, embedded Chroma."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragfn.ingest.walk import ingest
from ragfn.serve.runtime import Runtime

pytestmark = pytest.mark.integration

GUIDE = """# Guide

## Install

Install the package with pip. It needs Python 3.11 or newer.

## Usage

Call the function with a path. It returns the number of lines in the file.

## Limits

Files over one gigabyte are refused. Binary files are refused too.
"""


def write(root: Path, name: str, text: str | bytes) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def run_cli(settings, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAGFN_HOME=str(settings.home), RAGFN_EMBED_MODEL=settings.embed_model,
               RAGFN_EMBED_MODEL_PATH=str(settings.embed_model_path))
    return subprocess.run([sys.executable, "-m", "ragfn", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_ingest_skip_change_prune_and_stats(settings, tmp_path):
    docs = tmp_path / "docs"
    write(docs, "guide.md", GUIDE)
    write(docs, "notes.txt", "Plain notes.\n\nA second paragraph about caching.\n")
    write(docs, "page.html", "<html><body><h1>Page</h1><p>Hello from HTML.</p><script>x()</script></body></html>")
    write(docs, "image.png", b"\x89PNG\r\n\x1a\n\x00\x00")  # not picked up from a folder walk

    first = run_cli(settings, "ingest", str(docs), "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["documents"] == {"indexed": 3} and report["errors"] == {}
    assert report["stats"]["default"]["documents"] == 3

    again = json.loads(run_cli(settings, "ingest", str(docs), "--json", cwd=tmp_path).stdout)
    assert again["documents"] == {"unchanged": 3} and again["chunks_embedded"] == 0

    write(docs, "guide.md", GUIDE.replace("It needs Python 3.11 or newer.", "It needs Python 3.12 or newer."))
    (docs / "notes.txt").unlink()
    changed = run_cli(settings, "ingest", str(docs), "--prune", "--json", cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr[-3000:]
    changed = json.loads(changed.stdout)
    assert changed["documents"] == {"indexed": 1, "unchanged": 1}
    assert changed["chunks_embedded"] >= 1 and changed["chunks_reused"] >= 1  # only the changed section
    assert changed["removed"] == [f"file://{docs}/notes.txt"]

    stats = run_cli(settings, "stats", "--json", cwd=tmp_path)
    collections = json.loads(stats.stdout)["collections"]
    assert collections["default"]["documents"] == 2

    maintained = json.loads(run_cli(settings, "maintain", cwd=tmp_path).stdout)  # what the PingSource runs
    assert maintained["outcome"] == "done" and maintained["collections"][0]["collection"] == "default"


def test_bad_files_are_reported_and_the_rest_ingested(settings, tmp_path):
    docs = tmp_path / "docs"
    write(docs, "good.md", GUIDE)
    write(docs, "empty.txt", "")
    write(docs, "binary.txt", b"\x00\x01\x02\x03binary\x00")
    write(docs, "latin1.txt", "caf\xe9 cr\xe8me".encode("latin-1"))
    write(docs, "broken.pdf", b"%PDF-1.4 this is not really a pdf")
    runtime = Runtime(settings)
    report = ingest([str(docs)], runtime)
    assert report.counts() == {"indexed": 1, "rejected": 4}
    assert "empty" in report.errors[f"file://{docs}/empty.txt"].lower()
    assert runtime.index.stats()["default"]["documents"] == 1


def test_paths_outside_the_roots_and_dotdot_are_refused(settings, tmp_path):
    runtime = Runtime(settings.model_copy(update={"file_roots": [tmp_path / "docs"]}))
    write(tmp_path, "secret.txt", "do not read")
    write(tmp_path / "docs", "ok.txt", "fine to read")
    report = ingest([f"file://{tmp_path}/docs/ok.txt", f"file://{tmp_path}/secret.txt"], runtime)
    assert report.outcomes == {f"file://{tmp_path}/docs/ok.txt": "indexed"}
    assert "RAGFN_FILE_ROOTS" in report.errors[f"file://{tmp_path}/secret.txt"]


def test_tenant_and_groups_land_on_every_chunk(settings, tmp_path):
    write(tmp_path / "docs", "guide.md", GUIDE)
    runtime = Runtime(settings)
    ingest([str(tmp_path / "docs")], runtime, collection="acme-docs", tenant="acme", groups=("eng", "ops"))
    found = runtime.index.chunks("acme-docs", "acme").get(include=["metadatas", "documents"])
    assert found["ids"] and all(m["tenant"] == "acme" and m["groups"] == ["eng", "ops"] for m in found["metadatas"])
    text = (tmp_path / "docs" / "guide.md").read_text()
    for meta, chunk_text in zip(found["metadatas"], found["documents"], strict=True):
        assert text[meta["start"]:meta["end"]] == chunk_text  # offsets point into the source
        assert meta["heading_path"].startswith("Guide")


def test_cli_names_missing_paths_and_fails(settings, tmp_path):
    write(tmp_path / "docs", "ok.md", GUIDE)
    result = run_cli(settings, "ingest", str(tmp_path / "docs"), str(tmp_path / "missing.md"), cwd=tmp_path)
    assert result.returncode == 1
    assert f"file://{tmp_path}/missing.md: no such file" in result.stderr
    assert "documents: 1 indexed, 1 rejected" in result.stdout


def test_an_unusable_model_stops_the_run_with_one_clear_error(settings, tmp_path):
    write(tmp_path / "docs", "a.md", GUIDE)
    write(tmp_path / "docs", "b.md", GUIDE.replace("Guide", "Other"))
    broken = settings.model_copy(update={"embed_model_path": tmp_path / "no-model"})
    with pytest.raises(Exception, match="RAGFN_EMBED_MODEL_PATH") as caught:
        ingest([str(tmp_path / "docs")], Runtime(broken))
    assert caught.value.retryable
    assert "fetch_models" in caught.value.hint


def test_changed_chunk_settings_rechunk_unchanged_files_and_leave_no_old_chunks(settings, tmp_path):
    paragraphs = [f"Paragraph {n} says that step {n} of the install copies file number {n} into place."
                  for n in range(40)]
    write(tmp_path / "docs", "notes.txt", "\n\n".join(paragraphs) + "\n")
    runtime = Runtime(settings.model_copy(update={"chunk_tokens": 200, "chunk_overlap_tokens": 32}))
    first = ingest([str(tmp_path / "docs")], runtime, collection="rechunk")
    assert first.counts() == {"indexed": 1}
    before = runtime.index.chunks("rechunk").get(include=["metadatas"])
    assert {m["end"] - m["start"] for m in before["metadatas"]}  # some chunks, whatever their sizes

    smaller = Runtime(settings.model_copy(update={"chunk_tokens": 24, "chunk_overlap_tokens": 0}))
    second = ingest([str(tmp_path / "docs")], smaller, collection="rechunk")
    assert second.counts() == {"indexed": 1}  # not "unchanged": the content is, the chunking is not
    after = smaller.index.chunks("rechunk").get(include=["metadatas", "documents"])
    entry = smaller.index.ledger_entry("rechunk", next(iter(second.outcomes)))
    assert entry.chunking == "24/0" and entry.chunks == len(after["ids"]) > len(before["ids"])
    assert all(smaller.token_counter.count(text) <= 24 for text in after["documents"])  # no 200-token leftovers
    assert ingest([str(tmp_path / "docs")], smaller, collection="rechunk").counts() == {"unchanged": 1}
