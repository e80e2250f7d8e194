#!/usr/bin/env bash
# Create .venv and install ragfn with the given extras/groups; then assemble the offline embedding model.
# Usage: scripts/bootstrap.sh [EXTRAS] [uv pip install flags...]   (EXTRAS defaults to "all")
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"; shift || true
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet "uv>=0.9,<1"
fi
[ -x .venv/bin/python ] || uv venv --quiet --python 3.11 .venv
# llama-cpp-python builds from source (no wheel on PyPI). Build it for the portable x86-64-v3 baseline the Dockerfile's
# predictor uses, not -march=native: a native build on a CPU with AMX (Sapphire Rapids) segfaults in llama_decode,
# and uv's cached wheel must also run on whichever machine reuses the cache.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
uv pip install --quiet --python .venv -e ".[${extras}]" "$@"
.venv/bin/python scripts/fetch_models.py >/dev/null
.venv/bin/python scripts/fetch_llm.py >/dev/null
