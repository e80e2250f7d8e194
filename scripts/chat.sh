#!/usr/bin/env bash
# The main job on the embedded default: set up, optionally ingest PATHs, then run `ragfn dev` (the functions, the
# predictor with SmolLM2, the ask gateway and the chat UI) until Ctrl-C. It prints the chat's URL and a sign-in key.
# Usage: scripts/chat.sh [PATH...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh all
export RAGFN_EMBED_MODEL="${RAGFN_EMBED_MODEL:-sentence-transformers/all-MiniLM-L6-v2}"
if [ "$#" -gt 0 ]; then
  .venv/bin/ragfn ingest "$@"
fi
exec .venv/bin/ragfn dev
