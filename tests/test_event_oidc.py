"""The production overlays require sender identity on the event path, and what they say matches the Triggers:
each function's audience and senders (components/event-oidc) are what ragfn.eventing.delivery_auth derives from
eventing/triggers/, the Broker admits exactly ragfn's own senders, and each receiving function can fetch the
cluster's keys (a projected token, the cluster CA, egress to the API server)."""

from __future__ import annotations

import pytest
from manifest_checks import build, trees

from ragfn.cli.dev_events import MAINTAIN
from ragfn.eventing.delivery_auth import pingsource_identity, senders_by_service
from ragfn.eventing.triggers import _trigger

pytestmark = pytest.mark.integration
PRODUCTION = [t for t in trees() if t.startswith("overlays/production")]


def _env(service: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in service["spec"]["template"]["spec"]["containers"][0].get("env", [])}


def _knative_services(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects
            if o["kind"] == "Service" and o["apiVersion"].startswith("serving.knative.dev")}


@pytest.mark.parametrize("tree", PRODUCTION)
def test_every_routed_function_takes_only_its_triggers_deliveries(tree):
    objects = build(tree).objects
    services = _knative_services(objects)
    triggers = [_trigger(o, tree) for o in objects if o["kind"] == "Trigger"]
    expected = senders_by_service(triggers)
    if MAINTAIN in services:
        expected[MAINTAIN] = [*expected.get(MAINTAIN, []), pingsource_identity(MAINTAIN)]
    namespace = next(o["metadata"]["namespace"] for o in objects if o["kind"] == "Trigger")
    configured = {name: _env(s) for name, s in services.items() if "RAGFN_EVENT_AUDIENCE" in _env(s)}
    assert set(configured) == set(expected), "every Service an event reaches verifies it, and no other"
    for name, env in configured.items():
        assert env["RAGFN_EVENT_AUDIENCE"] == name
        assert env["RAGFN_EVENT_NAMESPACE"] == namespace
        assert sorted(env["RAGFN_EVENT_SENDERS"].split(",")) == sorted(expected[name])
    for trigger in triggers:  # the Broker asks for tokens for the audience the subscriber checks
        assert trigger.audience == trigger.subscriber
    for obj in objects:
        if obj["kind"] == "Trigger" or obj["kind"] == "Broker":
            dead_letter = obj["spec"]["delivery"]["deadLetterSink"]
            assert dead_letter.get("audience") == dead_letter["ref"]["name"]
        if obj["kind"] == "PingSource" and obj["spec"]["sink"]["ref"]["kind"] == "Service":
            assert obj["spec"]["sink"]["audience"] == obj["spec"]["sink"]["ref"]["name"]


@pytest.mark.parametrize("tree", PRODUCTION)
def test_each_verifying_function_can_fetch_the_cluster_keys(tree):
    objects = build(tree).objects
    verifying = {n for n, s in _knative_services(objects).items() if "RAGFN_EVENT_AUDIENCE" in _env(s)}
    for name in verifying:
        spec = _knative_services(objects)[name]["spec"]["template"]["spec"]
        env = _env(_knative_services(objects)[name])
        volume, = [v for v in spec["volumes"] if v["name"] == "cluster-issuer"]
        sources = volume["projected"]["sources"]
        assert any("serviceAccountToken" in s for s in sources) and any(
            s.get("configMap", {}).get("name") == "kube-root-ca.crt" for s in sources)
        mount, = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "cluster-issuer"]
        assert env["RAGFN_EVENT_JWKS_TOKEN_FILE"].startswith(mount["mountPath"] + "/")
        assert env["RAGFN_EVENT_JWKS_CA_FILE"].startswith(mount["mountPath"] + "/")
        assert spec["automountServiceAccountToken"] is False  # the projected token is the only one
    policy, = [o for o in objects
               if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "ragfn-egress-api-server"]
    selected, = policy["spec"]["podSelector"]["matchExpressions"]
    assert set(selected["values"]) == verifying


@pytest.mark.parametrize("tree", PRODUCTION)
def test_the_broker_admits_exactly_ragfns_senders(tree):
    objects = build(tree).objects
    policy, = [o for o in objects if o["kind"] == "EventPolicy"]
    assert policy["spec"]["to"] == [{"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                                             "name": "ragfn"}}]
    admitted = {(f["ref"]["kind"], f["ref"]["name"]) for f in policy["spec"]["from"]}
    sending = {(o["kind"], o["metadata"]["name"]) for o in objects
               if o["kind"] in ("SinkBinding", "PingSource", "IntegrationSource")
               and o["spec"]["sink"]["ref"]["kind"] == "Broker"}
    replying = {("Trigger", o["metadata"]["name"]) for o in objects if o["kind"] == "Trigger"}
    assert admitted == sending | replying
