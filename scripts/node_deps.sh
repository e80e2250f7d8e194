#!/usr/bin/env bash
# What the manifest checks (tests/test_manifests.py) need besides .venv: npm @kubernetes-models/knative, /keda,
# /prometheus-operator and /apimachinery (pinned in tests/manifests/package-lock.json), and kubectl with its built-in kustomize.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "scripts/node_deps.sh: node >= 20 and npm are needed for the Knative/KEDA schema checks" >&2
  exit 1
fi
# Installed versions equal to the pins in package.json? Otherwise (re)install from the lock file.
installed() {
  (cd tests/manifests && node -e '
    const fs = require("fs"), deps = require("./package.json").dependencies;
    for (const [name, version] of Object.entries(deps)) {
      const file = `node_modules/${name}/package.json`;
      if (!fs.existsSync(file) || JSON.parse(fs.readFileSync(file)).version !== version) process.exit(1);
    }') 2>/dev/null
}
if ! installed; then
  # The packages declare node >= 22 but work on node 20; npm's EBADENGINE warning is expected there.
  (cd tests/manifests && npm ci --no-audit --no-fund --loglevel=error)
  installed || { echo "scripts/node_deps.sh: npm ci in tests/manifests did not install the pinned versions" >&2; exit 1; }
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "scripts/node_deps.sh: warning: kubectl is not on PATH, so tests/test_manifests.py will fail;" \
       "install kubectl >= 1.27 (kustomize is built in), e.g. from the Kubernetes apt repository" >&2
fi
