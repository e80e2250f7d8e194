#!/usr/bin/env bash
# Install everything the tests need (into .venv), then run them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh all --group dev
exec .venv/bin/python -m pytest "$@"
