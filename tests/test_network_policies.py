"""Redis and Chroma answer exactly the functions configured to use them, in every tree that has the policies."""

from __future__ import annotations

import pytest
from manifest_checks import build, trees

pytestmark = pytest.mark.integration


def _users(objects: list[dict], setting: str) -> set[str]:
    """The pod names (app.kubernetes.io/name) of the Knative Services whose containers have `setting`."""
    found = set()
    for obj in objects:
        if obj["kind"] != "Service" or not obj["apiVersion"].startswith("serving.knative.dev"):
            continue
        template = obj["spec"]["template"]
        if any(e.get("name") == setting for c in template["spec"]["containers"] for e in c.get("env", [])):
            found.add(template["metadata"]["labels"]["app.kubernetes.io/name"])
    return found


def _admitted(policy: dict) -> set[str]:
    names = set()
    for rule in policy["spec"]["ingress"]:
        for peer in rule["from"]:
            for expression in peer["podSelector"].get("matchExpressions", []):
                assert expression["key"] == "app.kubernetes.io/name" and expression["operator"] == "In"
                names |= set(expression["values"])
            assert "matchLabels" not in peer["podSelector"], "a label selector admits more than the named pods"
    return names


@pytest.mark.parametrize("tree", [t for t in trees() if t.startswith("overlays/")])
def test_state_answers_only_the_functions_that_use_it(tree):
    objects = build(tree).objects
    policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}
    if "ragfn-allow-redis" not in policies:
        pytest.skip(f"{tree} has no network policies")  # the dev overlay: no policy component
    assert _admitted(policies["ragfn-allow-redis"]) == _users(objects, "RAGFN_REDIS_URL")
    assert "ragfn-chunk" not in _admitted(policies["ragfn-allow-redis"])
    uses_chroma = {o["metadata"]["name"] for o in objects if o["kind"] == "StatefulSet"} & {"ragfn-chroma"}
    if uses_chroma:
        assert _admitted(policies["ragfn-allow-chroma"]) == _users(objects, "RAGFN_CHROMA_URL")
