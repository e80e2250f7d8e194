"""Every container of every tree the manifests build runs without privileges (docs/security.md "Pods").

Each needs allowPrivilegeEscalation: false, every capability dropped, the RuntimeDefault seccomp profile and a
non-root user (on the container or its pod), and a read-only root filesystem unless it is listed below with why.
"""

from __future__ import annotations

import pytest
from manifest_checks import build, containers, ident, trees

pytestmark = pytest.mark.integration

WRITABLE_ROOT = {  # (kind, name, container): why its root filesystem stays writable
    ("ServingRuntime", "ragfn-predictor", "kserve-container"): "llama.cpp and KServe write caches under HOME",
    ("ServingRuntime", "ragfn-predictor-gpu", "kserve-container"): "vLLM, torch and triton write caches under HOME",
    ("StatefulSet", "ragfn-chroma", "chroma"): "the chromadb/chroma image writes outside /data",
}


def _at(obj: dict, path: str):
    node = obj
    for part in path.strip("/").split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def problems(obj: dict) -> list[str]:
    found = []
    for path, container in containers(obj):
        if "image" not in container:  # an InferenceService's model: its runtime's container is checked
            continue
        pod = _at(obj, path.rsplit("/", 2)[0])
        mine, pods = container.get("securityContext", {}), pod.get("securityContext", {})
        name = (obj["kind"], obj["metadata"]["name"], container.get("name"))
        missing = [what for what, ok in (
            ("allowPrivilegeEscalation: false", mine.get("allowPrivilegeEscalation") is False),
            ("capabilities.drop [ALL]", "ALL" in mine.get("capabilities", {}).get("drop", [])),
            ("seccompProfile RuntimeDefault", (mine.get("seccompProfile") or pods.get("seccompProfile") or {})
             .get("type") == "RuntimeDefault"),
            ("runAsNonRoot", bool(mine.get("runAsNonRoot") or pods.get("runAsNonRoot"))),
            ("readOnlyRootFilesystem", mine.get("readOnlyRootFilesystem") is True or name in WRITABLE_ROOT),
        ) if not ok]
        if missing:
            found.append(f"{ident(obj)} container {container.get('name')}: {', '.join(missing)}")
    return found


@pytest.mark.parametrize("tree", list(trees()))
def test_every_container_runs_without_privileges(tree: str) -> None:
    result = build(tree)
    assert result.error is None, result.error
    found = [p for obj in result.objects for p in problems(obj)]
    assert not found, "\n".join(found)


def test_the_check_catches_a_privileged_container() -> None:
    pod = {"kind": "Deployment", "metadata": {"name": "x"}, "spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "i", "securityContext": {"runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}}]}}}}
    assert problems(pod) == ["None Deployment x container c: allowPrivilegeEscalation: false, seccompProfile "
                             "RuntimeDefault, readOnlyRootFilesystem"]
