"""The retrieve function through functions-framework's test client, on an index built with the real model."""

from __future__ import annotations

from pathlib import Path

import pytest
from functions_framework import create_app

from ragfn.ingest.walk import ingest
from ragfn.retrieval.context import assemble_context, render
from ragfn.retrieval.dense import Hit
from ragfn.serve.runtime import Runtime

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent

DOCS = {
    "lists.md": "# Lists\n\n## Sorting\n\nTo sort a list in place call list.sort(); sorted() returns a new list.\n",
    "files.md": "# Files\n\nOpen a file with open(path) and read it with read().\n",
    "hr.md": "# Pay\n\nSalary bands are reviewed every spring.\n",
}


@pytest.fixture
def client(ragfn_env, tmp_path):
    runtime = Runtime(ragfn_env)
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text)
        ingest([str(tmp_path / name)], runtime, tenant="acme", groups=("hr",) if name == "hr.md" else ())
    return create_app(target="handle", source=str(REPO / "functions" / "retrieve" / "main.py"),
                      signature_type="http").test_client()


def test_hits_and_numbered_passages_for_the_caller(client, tmp_path):
    response = client.post("/", json={"question": "how do I sort a list?", "tenant": "acme", "top_k": 3})
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["hits"][0]["source"] == f"file://{tmp_path}/lists.md"
    first = body["passages"][0]
    assert first["number"] == 1 and first["heading_path"] == "Lists > Sorting"
    assert DOCS["lists.md"][first["start"]:first["end"]] == first["text"]
    assert all(not h["source"].endswith("hr.md") for h in body["hits"])
    assert body["timings_ms"]["retrieve"] > 0
    hr = client.post("/", json={"question": "salary bands", "tenant": "acme", "groups": ["hr"], "mode": "lexical"})
    assert hr.get_json()["hits"][0]["source"].endswith("hr.md")
    assert client.post("/", json={"question": "salary bands", "tenant": "globex"}).get_json()["hits"] == []


@pytest.mark.parametrize("body, field", [
    ({"question": ""}, "question"),
    ({"question": "x" * 5000}, "question"),
    ({"question": 42}, "question"),
    ({"question": "ok", "top_k": 0}, "top_k"),
    ({"question": "ok", "mode": "sparse"}, "mode"),
    ({"question": "ok", "unexpected": 1}, "unexpected"),
    ({}, "question"),
])
def test_bad_requests_name_the_field(client, body, field):
    response = client.post("/", json=body)
    assert response.status_code == 400 and field in response.get_json()["message"]


def test_non_json_body_is_a_400(client):
    response = client.post("/", data=b"\xff\xfe binary", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "JSON" in response.get_json()["message"]


@pytest.mark.unit
def test_context_respects_the_budget_and_skips_covered_chunks():
    def hit(n: int, start: int, end: int, tokens: int, source: str = "s") -> Hit:
        return Hit(f"c{n}", source, f"text {n}", 1.0 / n, {"start": start, "end": end, "tokens": tokens,
                                                            "heading_path": "H"})
    hits = [hit(1, 0, 100, 50), hit(2, 10, 90, 40), hit(3, 100, 200, 500), hit(4, 200, 300, 30)]
    passages = assemble_context(hits, budget_tokens=120)
    assert [p.chunk_id for p in passages] == ["c1", "c4"]  # c2 is inside c1, c3 does not fit
    assert [p.number for p in passages] == [1, 2]
    assert render(passages).startswith("[1] s › H\ntext 1\n\n[2] s › H\ntext 4")
