"""eventing/ as a cluster gets it: kustomize builds it with each Broker component, every Broker class routes every
event type to the same function, and every type ragfn produces has a consumer or is documented as terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ragfn.eventing import events
from ragfn.eventing.triggers import _trigger, load_triggers

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parent.parent
EVENTING = REPO / "eventing"
COMPONENTS = sorted(p.name for p in (EVENTING / "components").iterdir() if p.is_dir())


def build(tmp_path: Path, *components: str) -> list[dict]:
    """`kubectl kustomize` of an overlay that includes eventing/ (and components), as manifests/ overlays do."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    overlay = tmp_path / "overlay"
    overlay.mkdir(exist_ok=True)
    relative = Path(os.path.relpath(EVENTING, overlay))  # kustomize takes no absolute paths
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "ragfn",
        "resources": [str(relative)], "components": [str(relative / "components" / c) for c in components]}))
    done = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def routes(docs: list[dict]) -> dict[str, list[str]]:
    triggers = [_trigger(doc, Path("built")) for doc in docs if doc["kind"] == "Trigger"]
    types = [*events.EVENT_MODELS, *events.STORAGE_TYPES, events.PING]
    extensions = {events.PING: {"ragfnjob": "resync"}}
    return {t: sorted(tr.subscriber for tr in triggers if tr.matches({"type": t} | extensions.get(t, {})))
            for t in types}


def test_the_folder_builds_and_holds_what_a_cluster_needs(tmp_path):
    docs = build(tmp_path)
    kinds = sorted({doc["kind"] for doc in docs})
    assert kinds == ["Broker", "PingSource", "SinkBinding", "Trigger"]
    broker, = [doc for doc in docs if doc["kind"] == "Broker"]
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == "MTChannelBasedBroker"
    for doc in docs:
        if doc["kind"] in ("Broker", "Trigger"):
            delivery = doc["spec"]["delivery"]
            assert delivery["retry"] >= 1 and delivery["backoffPolicy"] in ("linear", "exponential")
            assert delivery["deadLetterSink"]["ref"]["name"] == "ragfn-dead-letter"
        if doc["kind"] == "Trigger":
            assert doc["spec"]["broker"] == "ragfn"
    # the keep-alive is the gateway's own timer: /v1/warmup needs credentials a PingSource cannot send
    assert not [d for d in docs if d["kind"] == "PingSource" and "/v1/warmup" in str(d["spec"].get("sink"))]


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_broker_class_routes_every_type_alike(tmp_path, component):
    default = routes(build(tmp_path))
    assert routes(build(tmp_path, component)) == default
    assert all(default.values()), {t: s for t, s in default.items() if not s}


@pytest.mark.parametrize(("component", "broker_class", "config_kind"), [
    ("broker-kafka", "Kafka", "ConfigMap"), ("broker-rabbitmq", "RabbitMQBroker", "RabbitmqBrokerConfig")])
def test_the_broker_components_switch_the_class_and_its_config(tmp_path, component, broker_class, config_kind):
    docs = build(tmp_path, component)
    broker, = [doc for doc in docs if doc["kind"] == "Broker"]
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == broker_class
    assert broker["spec"]["config"]["kind"] == config_kind
    if component == "broker-rabbitmq":  # it binds exact attribute matches only
        assert not [doc for doc in docs if doc["kind"] == "Trigger" and doc["spec"].get("filters")]
        config, = [doc for doc in docs if doc["kind"] == "RabbitmqBrokerConfig"]
        assert config["metadata"]["name"] == broker["spec"]["config"]["name"]


def test_the_s3_source_reads_a_queue_not_the_bucket(tmp_path):
    source, = [doc for doc in build(tmp_path, "source-s3-sqs") if doc["kind"] == "IntegrationSource"]
    assert "s3" not in source["spec"]["aws"]  # the aws.s3 poller deletes the objects it reads
    assert source["spec"]["aws"]["sqs"]["arn"].startswith("arn:aws:sqs:")
    assert source["spec"]["sink"]["ref"] == {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                                             "name": "ragfn"}


def test_every_produced_type_has_a_consumer_or_is_terminal():
    triggers = load_triggers(EVENTING / "triggers")
    for event_type in events.PRODUCERS:
        extensions = {"ragfnjob": "resync"} if event_type == events.PING else {}
        consumed = any(t.matches({"type": event_type} | extensions) for t in triggers)
        assert consumed != (event_type in events.TERMINAL_TYPES), event_type
    assert set(events.EVENT_MODELS) | set(events.STORAGE_TYPES) <= set(events.PRODUCERS)


def test_the_local_broker_reads_only_triggers(tmp_path):
    names = sorted(t.name for t in load_triggers(EVENTING / "triggers"))
    assert names == ["ragfn-cache-invalidate", "ragfn-chunk", "ragfn-embed", "ragfn-index", "ragfn-judge", "ragfn-resync"]
    (tmp_path / "kustomization.yaml").write_text("resources: [a.yaml]\n")
    (tmp_path / "a.yaml").write_text((EVENTING / "triggers" / "embed.yaml").read_text() + "---\nkind: PingSource\n")
    assert [t.name for t in load_triggers(tmp_path)] == ["ragfn-embed"]
