#!/usr/bin/env bash
# Install everything the tests need (into .venv), then run them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh all --group dev
bash scripts/browser.sh
bash scripts/node_deps.sh
if [ $# -eq 0 ]; then
  # The reliability smoke runs real stacks in a pytest process of its own: earlier tests leave process-wide state
  # behind (a default socket timeout) that broke its stack in a shared run, and passed in isolation.
  .venv/bin/python -m pytest --ignore=tests/test_reliability.py
  exec .venv/bin/python -m pytest tests/test_reliability.py
fi
exec .venv/bin/python -m pytest "$@"
