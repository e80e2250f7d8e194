#!/usr/bin/env bash
# Install everything the tests need (into .venv), then run them. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh all --group dev
bash scripts/browser.sh
bash scripts/node_deps.sh
if [ $# -eq 0 ]; then
  # The reliability smoke runs its real stack from a pytest process of its own: in a shared run its retrieve calls
  # timed out throughout, and alone it passed. The cause was not pinned down (its delay proxy then ran in the test
  # process, competing with what earlier tests left running there; it is now a process of its own).
  .venv/bin/python -m pytest --ignore=tests/test_reliability.py
  exec .venv/bin/python -m pytest tests/test_reliability.py
fi
exec .venv/bin/python -m pytest "$@"
