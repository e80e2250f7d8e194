"""`ragfn retrieve` and `ragfn eval` as a user runs them, against an index built with the real model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ragfn.ingest.walk import ingest
from ragfn.serve.runtime import Runtime

pytestmark = pytest.mark.integration

FAQ = {
    "lists.md": "# Lists\n\nTo sort a list in place call list.sort(); sorted() returns a new sorted list.\n",
    "files.md": "# Files\n\nOpen a file with open(path) and read it with read(); close it or use a with block.\n",
    "hr.md": "# Salaries\n\nSalary bands are reviewed every spring by the people team.\n",
}


@pytest.fixture
def indexed(settings, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in FAQ.items():
        (docs / name).write_text(text)
    runtime = Runtime(settings)
    ingest([str(docs / "lists.md"), str(docs / "files.md")], runtime, tenant="acme")
    ingest([str(docs / "hr.md")], runtime, tenant="acme", groups=("hr",))
    return settings, docs


def ragfn(settings, *args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAGFN_HOME=str(settings.home), RAGFN_EMBED_MODEL=settings.embed_model,
               RAGFN_EMBED_MODEL_PATH=str(settings.embed_model_path))
    return subprocess.run([sys.executable, "-m", "ragfn", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_retrieve_one_question_and_a_batch(indexed, tmp_path):
    settings, docs = indexed
    one = ragfn(settings, "retrieve", "how do I sort a list", "--tenant", "acme", "--top-k", "2", "--json",
                cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    hits = json.loads(one.stdout)
    assert set(hits[0]) == {"chunk_id", "source", "text", "score"}
    assert hits[0]["source"] == f"file://{docs}/lists.md"

    queries = tmp_path / "q.jsonl"
    queries.write_text("\n".join(json.dumps({"question": q}) for q in
                                 ["sort a list", "read a file", "salary review"]) + "\n")
    for mode in ("dense", "lexical", "hybrid"):
        batch = ragfn(settings, "retrieve", "--queries", str(queries), "--mode", mode, "--tenant", "acme",
                      "--json", cwd=tmp_path)
        assert batch.returncode == 0, batch.stderr
        lines = [json.loads(line) for line in batch.stdout.splitlines()]
        assert len(lines) == 3
        assert lines[0][0]["source"].endswith("lists.md") and lines[1][0]["source"].endswith("files.md")
        assert not any(h["source"].endswith("hr.md") for line in lines for h in line)  # not in group hr


def test_retrieve_rejects_bad_input_clearly(indexed, tmp_path):
    settings, _ = indexed
    neither = ragfn(settings, "retrieve", cwd=tmp_path)
    assert neither.returncode == 2 and "QUESTION or --queries" in neither.stderr
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "fine"}\n{not json\n')
    bad = ragfn(settings, "retrieve", "--queries", str(broken), cwd=tmp_path)
    assert bad.returncode == 2 and "broken.jsonl:2" in bad.stderr
    mode = ragfn(settings, "retrieve", "x", "--mode", "sparse", cwd=tmp_path)
    assert mode.returncode == 2 and "unknown retrieval mode" in mode.stderr


def test_eval_reports_every_metric_for_every_mode(indexed, tmp_path):
    settings, docs = indexed
    text = (docs / "lists.md").read_text()
    start = text.index("To sort")
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text(json.dumps({"id": "q1", "question": "How do I sort a list?", "source": "lists.md",
                                    "gold": [[start, len(text.rstrip())]]}) + "\n")
    # untenanted callers see untenanted documents only, so index the labelled document without a tenant too
    ingest([str(docs / "lists.md")], Runtime(settings), collection="evalset")
    result = ragfn(settings, "eval", "--queries", str(labelled), "--collection", "evalset", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["queries"] == 1
    for mode in ("dense", "lexical", "hybrid"):
        assert report["modes"][mode] == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "MRR@10": 1.0, "nDCG@10": 1.0}


def test_ask_prints_the_documented_json(indexed, tmp_path):
    settings, docs = indexed
    result = ragfn(settings, "ask", "How do I sort a list?", "--tenant", "acme", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer) == {"answer", "answer_id", "citations", "cache", "degraded", "citations_inferred",
                           "truncated", "model", "provider", "gate", "timings_ms"}
    assert answer["cache"] == "miss" and answer["degraded"] is None and "[1]" in answer["answer"]
    assert (answer["model"], answer["provider"], answer["gate"]) == ("extractive", "extractive", None)
    assert answer["citations"][0] == {"source": f"file://{docs}/lists.md", "chunk_id": answer["citations"][0][
        "chunk_id"], "text": FAQ["lists.md"].split("\n\n", 1)[1].strip()}
    empty = ragfn(settings, "ask", "", cwd=tmp_path)
    assert empty.returncode == 2 and "question" in empty.stderr
