#!/usr/bin/env bash
# The main job on the embedded default: ingest a folder, then show what was indexed.
# Usage: scripts/demo.sh [PATH...]   (defaults to this repository's docs/ and README.md)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh all
export RAGFN_EMBED_MODEL="${RAGFN_EMBED_MODEL:-sentence-transformers/all-MiniLM-L6-v2}"
[ "$#" -gt 0 ] || set -- docs README.md
.venv/bin/ragfn ingest "$@" --prune
.venv/bin/ragfn stats --json
