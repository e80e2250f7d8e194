"""Tuned-settings profiles: written by notebooks, read by every ragfn process, below RAGFN_* variables."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

from ragfn.core.config import load_settings
from ragfn.core.errors import ConfigError
from ragfn.core.profile import read_profile, write_profile

pytestmark = pytest.mark.unit


def test_a_written_profile_replaces_defaults_and_environment_variables_win(tmp_path, monkeypatch):
    path = write_profile(tmp_path / "tuned.toml", {"chunk_tokens": 128, "lexical_weight": 0.45, "fusion": "rrf"},
                         source="notebooks/02-retrieval.ipynb")
    assert path.read_text().startswith("# ragfn profile written by notebooks/02-retrieval.ipynb")
    assert read_profile(path) == {"chunk_tokens": 128, "fusion": "rrf", "lexical_weight": 0.45}
    monkeypatch.setenv("RAGFN_PROFILE", str(path))
    monkeypatch.setenv("RAGFN_LEXICAL_WEIGHT", "0.2")
    settings = load_settings()
    assert (settings.chunk_tokens, settings.fusion, settings.lexical_weight) == (128, "rrf", 0.2)
    assert load_settings(chunk_tokens=64).chunk_tokens == 64  # arguments win over both


def test_bad_profiles_are_refused_with_the_reason(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown or non-tunable settings: chunk_token"):
        write_profile(tmp_path / "typo.toml", {"chunk_token": 128}, source="test")
    with pytest.raises(ConfigError, match="not valid together"):
        write_profile(tmp_path / "bad.toml", {"chunk_tokens": 16, "chunk_overlap_tokens": 32}, source="test")
    (tmp_path / "broken.toml").write_text("chunk_tokens = = 3")
    (tmp_path / "home.toml").write_text('home = "/elsewhere"')
    for name, reason in (("broken.toml", "not valid TOML"), ("home.toml", "non-tunable settings: home"),
                         ("missing.toml", "does not exist")):
        monkeypatch.setenv("RAGFN_PROFILE", str(tmp_path / name))
        with pytest.raises(ConfigError, match=reason):
            load_settings()


@pytest.mark.integration
def test_the_cli_applies_a_profile(tmp_path, model_dir):
    profile = write_profile(tmp_path / "tuned.toml", {"chunk_tokens": 48, "chunk_overlap_tokens": 8}, source="test")
    (tmp_path / "doc.md").write_text("# Title\n\n" + " ".join(f"word{i}" for i in range(300)) + "\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "RAGFN_EMBED_MODEL_PATH": str(model_dir),
           "RAGFN_EMBED_MODEL": "sentence-transformers/all-MiniLM-L6-v2"}

    def chunks(home: str, *profile_args: str) -> int:
        for command in (["ingest", "doc.md"], ["stats", "--json"]):
            run = subprocess.run([sys.executable, "-m", "ragfn", *profile_args, *command], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=300, env=env | {"RAGFN_HOME": home})
            assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)["collections"]["default"]["chunks"]

    assert chunks(str(tmp_path / "tuned"), "--profile", str(profile)) > 1.5 * chunks(str(tmp_path / "plain"))
    bad = subprocess.run([sys.executable, "-m", "ragfn", "--profile", str(tmp_path / "nope.toml"), "stats"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=env | {"RAGFN_HOME": str(tmp_path / "plain")})
    assert bad.returncode != 0 and "does not exist" in bad.stderr
