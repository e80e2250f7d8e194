"""The tuning notebooks: executed headless in small mode, as CI runs them, and committed without outputs."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
import pytest

from ragfn.config import OFFLINE_MODEL, load_settings
from ragfn.profile import PROFILE_ENV, read_profile

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
# what each notebook tunes: the keys of the profile it writes
CHOICES = {"01-chunking": {"chunk_tokens", "chunk_overlap_tokens"}, "02-retrieval": {"fusion", "lexical_weight"},
           "03-cache-threshold": {"cache_threshold"}, "04-latency": {"embed_threads"}}
REDIS_URL = "redis://127.0.0.1:6379/14"  # the notebooks' own database; each deletes only its own key prefix


@pytest.mark.unit
def test_notebooks_are_committed_without_outputs() -> None:
    assert sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")) == sorted(CHOICES)
    for name in CHOICES:
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
        assert "write_profile(" in code[-1], f"{name}: the last cell writes the profile"


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


@pytest.mark.integration
@pytest.mark.timeout(280)
@pytest.mark.parametrize("name", sorted(CHOICES))
def test_notebook_runs_small_and_writes_its_profile(name: str, model_dir: Path, faq_sources: Path,
                                                    kernel_env: dict[str, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    for key in [k for k in os.environ if k.startswith("RAGFN_")]:
        monkeypatch.delenv(key)  # the notebook sees only what CI sets, and the profile check only the profile
    home = tmp_path / "home"
    env = {"RAGFN_NOTEBOOK_SMALL": "1", "RAGFN_HOME": home, "RAGFN_EMBED_MODEL": OFFLINE_MODEL,
           "RAGFN_EMBED_MODEL_PATH": model_dir, "RAGFN_NOTEBOOK_FAQ_DIR": faq_sources,
           "RAGFN_NOTEBOOK_REDIS_URL": REDIS_URL, "PYTHONDONTWRITEBYTECODE": "1", **kernel_env}
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))

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
    profile = home / "profiles" / f"{name}.toml"
    assert profile.is_file()
    values = read_profile(profile)
    assert set(values) == CHOICES[name]
    assert f"ragfn --profile {profile}" in notebook.cells[-2].outputs[-1]["text"]
    monkeypatch.setenv(PROFILE_ENV, str(profile))
    settings = load_settings()
    assert {key: getattr(settings, key) for key in values} == values
    assert not (REPO / "notebooks" / "profiles").exists() and not (REPO / "notebooks" / ".ragfn").exists()
