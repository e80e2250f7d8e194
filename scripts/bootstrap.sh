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
uv pip install --quiet --python .venv -e ".[${extras}]" "$@"
.venv/bin/python scripts/fetch_models.py >/dev/null
.venv/bin/python scripts/fetch_llm.py >/dev/null
