#!/usr/bin/env bash
# Install everything the tests need (into .venv), then run them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh all --group dev
bash scripts/browser.sh
bash scripts/node_deps.sh
exec .venv/bin/python -m pytest "$@"
