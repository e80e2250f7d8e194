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


def _egress_selected(policy: dict) -> set[str]:
    expression, = policy["spec"]["podSelector"]["matchExpressions"]
    assert expression["key"] == "app.kubernetes.io/name" and expression["operator"] == "In"
    return set(expression["values"])


def _calls_knative(objects: list[dict]) -> set[str]:
    """Pods whose settings name another Knative Service or the predictor (a cluster-local URL)."""
    found = set()
    for obj in objects:
        if obj["kind"] == "Service" and obj["apiVersion"].startswith("serving.knative.dev"):
            template = obj["spec"]["template"]
            values = [e.get("value") or "" for c in template["spec"]["containers"] for e in c.get("env", [])]
            if any(".svc.cluster.local" in v for v in values):
                found.add(template["metadata"]["labels"]["app.kubernetes.io/name"])
    return found


@pytest.mark.parametrize("tree", [t for t in trees() if t.startswith("overlays/")])
def test_egress_is_denied_but_for_what_each_function_uses(tree):
    objects = build(tree).objects
    policies = {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}
    if "ragfn-default-deny-egress" not in policies:
        pytest.skip(f"{tree} has no network policies")
    assert policies["ragfn-default-deny-egress"]["spec"] == {"podSelector": {}, "policyTypes": ["Egress"]}
    assert _egress_selected(policies["ragfn-egress-redis"]) == _users(objects, "RAGFN_REDIS_URL")
    assert "ragfn-chunk" not in _egress_selected(policies["ragfn-egress-redis"])
    if any(o["kind"] == "StatefulSet" and o["metadata"]["name"] == "ragfn-chroma" for o in objects):
        assert _egress_selected(policies["ragfn-egress-chroma"]) == _users(objects, "RAGFN_CHROMA_URL")
    publishers = {o["spec"]["subject"]["name"] for o in objects if o["kind"] == "SinkBinding"}
    assert _egress_selected(policies["ragfn-egress-broker"]) == publishers
    assert _calls_knative(objects) <= _egress_selected(policies["ragfn-egress-knative"])
    # every function pod is selected by some egress allowance beyond DNS: none is left unable to work
    functions = {o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] for o in objects
                 if o["kind"] == "Service" and o["apiVersion"].startswith("serving.knative.dev")}
    allowed = set().union(*(_egress_selected(p) for n, p in policies.items() if n.startswith("ragfn-")
                            and p["spec"]["policyTypes"] == ["Egress"] and p["spec"]["podSelector"]
                            and "matchExpressions" in p["spec"]["podSelector"]))
    assert functions <= allowed
    if any(o["kind"] == "Deployment" and o["metadata"]["name"] == "ragfn-otel-collector" for o in objects):
        exporter = policies["ragfn-egress-otel-collector"]  # traces leave for the backend in monitoring
        assert exporter["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "ragfn-otel-collector"}}
    for policy in policies.values():  # no egress rule opens a port to every address, the internet included
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to"), f"{policy['metadata']['name']}: an egress rule without a destination"
