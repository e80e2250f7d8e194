"""The notebooks: executed headless in small mode, as CI runs them, and committed without outputs."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
import redis

from ragfn.core.config import OFFLINE_MODEL, Settings, load_settings
from ragfn.core.profile import PROFILE_ENV, read_profile

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
# what each notebook tunes: the keys of the profile it writes
CHOICES = {"01-chunking": {"chunk_tokens", "chunk_overlap_tokens"}, "02-retrieval": {"fusion", "lexical_weight"},
           "03-cache-threshold": {"cache_threshold"}, "04-latency": {"embed_threads"}}
READERS = ("05-feedback",)  # notebooks that only read (answer ratings): they choose nothing and write no profile
REDIS_URL = "redis://127.0.0.1:6379/14"  # the notebooks' own database; each deletes only its own key prefix


@pytest.mark.unit
def test_notebooks_are_committed_without_outputs() -> None:
    assert sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")) == sorted([*CHOICES, *READERS])
    for name in [*CHOICES, *READERS]:
        notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(notebook)
        assert "widgets" not in notebook.metadata, name
        assert notebook.metadata["kernelspec"]["name"] == "python3", name
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name}: {cell.source[:60]!r}"
            assert "widgets" not in cell.metadata, name
        code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
        assert "RAGFN_NOTEBOOK_SMALL" in code[0], f"{name}: the first code cell holds the parameters"
        if name in CHOICES:
            assert "write_profile(" in code[-1], f"{name}: the last cell writes the profile"
        else:
            assert not any("write_profile(" in source for source in code), f"{name} writes no profile"


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A `python3` kernelspec that runs this interpreter (the .venv's), ahead of any other on JUPYTER_PATH, and
    IPython's and matplotlib's folders (its font cache, built once) in a temporary place."""
    from ipykernel.kernelspec import install

    prefix = tmp_path_factory.mktemp("jupyter")
    install(kernel_name="python3", prefix=str(prefix))
    return {"JUPYTER_PATH": prefix / "share" / "jupyter", "IPYTHONDIR": prefix / "ipython",
            "MPLCONFIGDIR": prefix / "matplotlib"}


@pytest.fixture(scope="module")
def faq_sources() -> Path:
    from fetch_corpus import sources_dir  # scripts/ is on sys.path (conftest)

    return sources_dir(Path(os.environ.get("RAGFN_HOME", REPO / ".ragfn")) / "corpora") / "faq"


def only_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, object]) -> None:
    """No RAGFN_* variable but those in `env`: the notebook sees only what CI sets, the profile check only the
    profile."""
    for key in [k for k in os.environ if k.startswith("RAGFN_")]:
        monkeypatch.delenv(key)
    # `import streamlit` (the chat's tests, collected in this process) sets MPLBACKEND=Agg for everyone; the
    # kernel must use its own inline backend, or plt.show() draws nothing
    monkeypatch.delenv("MPLBACKEND", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))


def execute(name: str, tmp_path: Path) -> nbformat.NotebookNode:
    """The notebook run headless, as CI runs it, without an error, on the .venv's Python."""
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    started = time.monotonic()
    try:
        NotebookClient(notebook, timeout=240, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    finally:
        nbformat.write(notebook, tmp_path / f"{name}.executed.ipynb")  # kept for a failure's post-mortem
    print(f"{name}: {time.monotonic() - started:.1f} s")

    assert not [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs
                if out.output_type == "error"]
    assert notebook.cells[-1].outputs[0]["text"].strip() == sys.executable  # the kernel ran the .venv's Python
    return notebook


@pytest.mark.integration
@pytest.mark.timeout(280)
@pytest.mark.parametrize("name", sorted(CHOICES))
def test_notebook_runs_small_and_writes_its_profile(name: str, model_dir: Path, faq_sources: Path,
                                                    kernel_env: dict[str, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    only_env(monkeypatch, {"RAGFN_NOTEBOOK_SMALL": "1", "RAGFN_HOME": home, "RAGFN_EMBED_MODEL": OFFLINE_MODEL,
                           "RAGFN_EMBED_MODEL_PATH": model_dir, "RAGFN_NOTEBOOK_FAQ_DIR": faq_sources,
                           "RAGFN_NOTEBOOK_REDIS_URL": REDIS_URL, "PYTHONDONTWRITEBYTECODE": "1", **kernel_env})
    notebook = execute(name, tmp_path)
    assert plots(notebook), f"{name} drew no plot"
    profile = home / "profiles" / f"{name}.toml"
    assert profile.is_file()
    values = read_profile(profile)
    assert set(values) == CHOICES[name]
    assert f"ragfn --profile {profile}" in notebook.cells[-2].outputs[-1]["text"]
    monkeypatch.setenv(PROFILE_ENV, str(profile))
    settings = load_settings()
    assert {key: getattr(settings, key) for key in values} == values
    assert not (REPO / "notebooks" / "profiles").exists() and not (REPO / "notebooks" / ".ragfn").exists()


def plots(notebook: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs
            if "image/png" in out.get("data", {})]


def printed(notebook: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs)


FEEDBACK_DOC = """# Lists and dictionaries

## Sorting

To sort a list in place, call list.sort(). The sorted() built-in returns a new sorted list and leaves the original
unchanged. Both take a key function and reverse=True.

## Merging dictionaries

To merge two dictionaries, write a | b (Python 3.9 and later), or update a copy: c = dict(a); c.update(b).
"""


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_feedback_notebook_reads_real_ratings(model_dir: Path, kernel_env: dict[str, Path], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Ratings given through the real gateway and FeedbackStore, as the chat gives them, show in 05-feedback."""
    from ragfn.gateway.ask import AskRequest
    from ragfn.ingest.walk import ingest
    from ragfn.retrieval.dense import Caller
    from ragfn.serve.runtime import Runtime

    prefix = f"nb05test-{os.getpid()}-{time.monotonic_ns()}"
    only_env(monkeypatch, {"RAGFN_NOTEBOOK_SMALL": "1", "RAGFN_HOME": tmp_path / "home",
                           "RAGFN_NOTEBOOK_FEEDBACK_REDIS_URL": REDIS_URL, "RAGFN_CACHE_PREFIX": prefix,
                           "PYTHONDONTWRITEBYTECODE": "1", **kernel_env})
    server = redis.Redis.from_url(REDIS_URL)
    try:
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "lists.md").write_text(FEEDBACK_DOC)
        settings = Settings(home=tmp_path / "home", embed_model=OFFLINE_MODEL, embed_model_path=model_dir,
                            file_roots=[tmp_path], redis_url=REDIS_URL, cache_prefix=prefix)
        runtime = Runtime(settings)
        report = ingest([str(tmp_path / "docs")], runtime, collection="python", tenant="acme")
        assert not report.errors, report.errors
        caller = Caller("acme", ("eng",))
        ratings = [("How do I sort a list?", "up", ""),
                   ("How do I sort a list?", "down", "the cached answer ignores reverse order"),
                   ("How do I merge two dictionaries?", "up", "clear"),
                   ("What does the walrus operator do?", "down", "nothing about := at all")]
        caches = []
        for question, rating, comment in ratings:
            answer = runtime.gateway.ask(AskRequest(question=question, collection="python"), caller)
            assert answer["answer_id"] and answer["degraded"] is None, answer
            caches.append(answer["cache"])
            runtime.feedback.rate(answer["answer_id"], "acme", rating, comment)
        assert caches == ["miss", "hit", "miss", "miss"]  # the repeat came from the cache
        # a predictor that is not up yet (nothing listens on port 1): the extractive engine answers, marked cold-start
        cold = Runtime(settings.model_copy(update={"llm_url": "http://127.0.0.1:1/v1",
                                                   "llm_cold_wait_seconds": 0.0, "llm_warmup_give_up_seconds": 2.0}))
        answer = cold.gateway.ask(AskRequest(question="Can sorted() sort in reverse?", collection="python"), caller)
        assert answer["degraded"] == "cold-start", answer
        cold.feedback.rate(answer["answer_id"], "acme", "down", "slow model, short answer")

        notebook = execute("05-feedback", tmp_path)
    finally:
        keys = list(server.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            server.delete(*keys)
    text = printed(notebook)
    assert "all time (the counters): 2 up, 3 down" in text
    assert "read: 5 rated answers, 2 up, 3 down" in text
    assert "by cache     : hit 0 up, 1 down; miss 2 up, 2 down; off 0 up, 0 down" in text
    assert "by degraded  : none 2 up, 2 down; cold-start 0 up, 1 down" in text
    assert "by collection: python 2 up, 3 down" in text
    down_rated = text[text.index("3 of 3 down-rated answers, newest first"):]
    order = [down_rated.index(q) for q in ("Can sorted() sort in reverse?", "What does the walrus operator do?",
                                           "How do I sort a list?")]
    assert order == sorted(order)
    for comment in ("slow model, short answer", "nothing about := at all", "the cached answer ignores reverse order"):
        assert f"comment: {comment}" in down_rated
    assert "merge two dictionaries" not in down_rated
    assert "matched: How do I sort a list? (similarity 1.00)" in down_rated  # the hit names the question it matched
    assert json.dumps({"cached": "How do I sort a list?", "asked": "How do I sort a list?", "label": "?"}) in down_rated
    assert len(plots(notebook)) == 1


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("url", [REDIS_URL, "redis://127.0.0.1:1/0"], ids=["no-ratings", "no-redis"])
def test_feedback_notebook_runs_to_the_end_without_ratings(url: str, kernel_env: dict[str, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    only_env(monkeypatch, {"RAGFN_NOTEBOOK_SMALL": "1", "RAGFN_HOME": tmp_path / "home",
                           "RAGFN_NOTEBOOK_FEEDBACK_REDIS_URL": url, "RAGFN_CACHE_PREFIX": f"nb05empty-{os.getpid()}",
                           "PYTHONDONTWRITEBYTECODE": "1", **kernel_env})
    text = printed(execute("05-feedback", tmp_path))
    assert ("No ratings yet (0 up, 0 down)" if url == REDIS_URL else "Could not read them:") in text
    assert "make chat" in text and "no down-rated answers (no ratings were read)" in text
