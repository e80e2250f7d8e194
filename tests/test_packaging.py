"""What the images install is what was tested: bounded 0.x dependencies, the Chroma client matching the server
image, and model files checked against the sha256 recorded when they were pinned."""

from __future__ import annotations

import sys
import tomllib

import pytest
from conftest import REPO
from packaging.requirements import Requirement
from packaging.version import Version

pytestmark = pytest.mark.unit
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def requirements() -> list[Requirement]:
    found = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in PROJECT["optional-dependencies"].values():
        found += [Requirement(r) for r in extra if not r.startswith("ragfn[")]
    return found


def test_every_0x_dependency_of_an_image_has_an_upper_bound():
    # before 1.0 a minor release may break the API: an image built next month must not install one untested
    loose = sorted({str(r) for r in requirements()
                    if any(s.operator == ">=" and Version(s.version).major == 0 for s in r.specifier)
                    and not any(s.operator in ("<", "<=", "==", "~=") for s in r.specifier)})
    assert not loose, f"0.x dependencies without an upper bound: {loose}"


def test_the_chroma_client_matches_the_server_image():
    manifest = (REPO / "manifests" / "base" / "state" / "chroma.yaml").read_text().splitlines()
    image = next(line.split("chromadb/chroma:")[1].strip() for line in manifest if "chromadb/chroma:" in line)
    for requirement in requirements():
        if requirement.name == "chromadb":
            assert requirement.specifier.contains(image), (str(requirement), image)


def test_a_model_file_with_other_bytes_stops_the_build(capsys):
    sys.path.insert(0, str(REPO / "scripts"))
    from fetch_models import SHA256, checked

    with pytest.raises(SystemExit, match="model.onnx has sha256") as stopped:
        checked("model.onnx", b"not the model")
    assert SHA256["model.onnx"] in str(stopped.value)


def test_uv_lock_is_what_pyproject_asks_for():
    # the images install from uv.lock (Dockerfile): a dependency changed in pyproject.toml without `uv lock` fails here
    import shutil
    import subprocess

    uv = shutil.which("uv")
    assert uv, "uv is not on PATH (scripts/bootstrap.sh installs it)"
    checked = subprocess.run([uv, "lock", "--check", "--offline"], cwd=REPO, capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == 0, checked.stderr[-2000:]


def test_the_images_install_their_dependencies_from_the_lock_with_hashes():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "COPY pyproject.toml uv.lock" in dockerfile
    for target in ("functions", "ui"):
        assert f"pip install --require-hashes -r /wheels/{target}.txt" in dockerfile
    assert "pip wheel --require-hashes --wheel-dir /wheels/deps -r /wheels/predictor.txt" in dockerfile
