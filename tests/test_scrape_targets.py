"""Every PodMonitor (manifests/components/prometheus-operator) scrapes pods the same tree runs, on ports they have,
and scrapes each selected pod once. No cluster runs here, so the pods are derived from the built objects the way
their controllers make them:
- a Knative Service's pods carry its template labels plus Knative's `serving.knative.dev/{service,configuration,
  revision}`; the serving container's port is named `user-port`, and the queue-proxy adds `http-usermetric`,
  `http-autometric` and `http-queueadm` (knative.dev/serving pkg/apis/serving/v1/revision_helpers.go);
- an InferenceService's predictor pods carry `serving.kserve.io/inferenceservice` and `component: predictor`,
  its own labels and its predictor's; in Knative mode (KServe's default, `Serverless`) they are Knative pods as
  above; in `Standard`/`RawDeployment` mode the container keeps its ServingRuntime's port names;
- a Deployment's or StatefulSet's pods carry its template labels and its containers' port names.
"""

from __future__ import annotations

import copy

import pytest

from manifest_checks import build, trees

pytestmark = pytest.mark.integration

TREES = list(trees())
KNATIVE_PORTS = {"user-port", "http-usermetric", "http-autometric", "http-queueadm"}
KNATIVE_MODES = {None, "Serverless", "Knative"}


def port_names(pod_spec: dict) -> set[str]:
    return {p["name"] for c in pod_spec.get("containers") or [] for p in c.get("ports") or [] if p.get("name")}


def knative_labels(name: str) -> dict[str, str]:
    return {"serving.knative.dev/service": name, "serving.knative.dev/configuration": name,
            "serving.knative.dev/revision": f"{name}-00001"}


def pods(objects: list[dict]) -> list[tuple[str, dict[str, str], set[str]]]:
    """(workload, pod labels, port names) for each workload in a built tree."""
    runtimes = {o["metadata"]["name"]: o for o in objects if o["kind"] in ("ServingRuntime", "ClusterServingRuntime")}
    found = []
    for obj in objects:
        kind, name, spec = obj["kind"], obj["metadata"]["name"], obj.get("spec") or {}
        if kind == "Service" and obj["apiVersion"].startswith("serving.knative.dev/"):
            template = spec.get("template") or {}
            labels = (template.get("metadata") or {}).get("labels") or {}
            found.append((f"ksvc/{name}", labels | knative_labels(name), KNATIVE_PORTS))
        elif kind in ("Deployment", "StatefulSet"):
            template = spec["template"]
            found.append((f"{kind}/{name}", template["metadata"].get("labels") or {}, port_names(template["spec"])))
        elif kind == "InferenceService":
            predictor = spec["predictor"]
            labels = (obj["metadata"].get("labels") or {}) | (predictor.get("labels") or {}) | {
                "serving.kserve.io/inferenceservice": name, "component": "predictor"}
            mode = (obj["metadata"].get("annotations") or {}).get("serving.kserve.io/deploymentMode")
            if mode in KNATIVE_MODES:
                found.append((f"isvc/{name}", labels | knative_labels(f"{name}-predictor"), KNATIVE_PORTS))
            else:
                runtime = runtimes[predictor["model"]["runtime"]]
                found.append((f"isvc/{name} ({mode})", labels, port_names(runtime["spec"])))
    return found


def selects(selector: dict, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if not {"Exists": key in labels, "DoesNotExist": key not in labels, "In": labels.get(key) in values,
                "NotIn": key not in labels or labels[key] not in values}[operator]:
            return False
    return True


def scrape_problems(objects: list[dict]) -> list[str]:
    workloads = pods(objects)
    problems = []
    for monitor in (o for o in objects if o["kind"] == "PodMonitor"):
        name, spec = monitor["metadata"]["name"], monitor["spec"]
        selected = [(w, ports) for w, labels, ports in workloads if selects(spec["selector"], labels)]
        endpoint_ports = [e.get("port") for e in spec["podMetricsEndpoints"]]
        if not selected:
            problems.append(f"PodMonitor {name} selects no pod of this tree ({spec['selector']})")
        for workload, ports in selected:
            scraped = [p for p in endpoint_ports if p in ports]
            if len(scraped) != 1:
                problems.append(f"PodMonitor {name} scrapes {workload} on {scraped or 'no port'} "
                                f"(its ports: {sorted(ports)}): each selected pod must be scraped exactly once")
    return problems


@pytest.mark.parametrize("tree", TREES)
def test_every_pod_monitor_scrapes_pods_of_its_tree_once(tree: str) -> None:
    result = build(tree)
    assert result.error is None, result.error
    assert not scrape_problems(result.objects), "\n".join(scrape_problems(result.objects))


def test_the_production_overlays_scrape_the_predictor_in_both_kserve_modes() -> None:
    """Knative mode in production, Standard mode (KEDA) in production-raw: the predictor is scraped in both."""
    for tree, port in (("overlays/production", "user-port"), ("overlays/production-raw", "http1")):
        objects = build(tree).objects
        predictor, = [(w, ports) for w, labels, ports in pods(objects) if w.startswith("isvc/ragfn-llm")]
        assert port in predictor[1], (tree, predictor)
        assert any(o["kind"] == "PodMonitor" and o["metadata"]["name"] == "ragfn-predictor" for o in objects), tree


def test_the_check_catches_a_selector_that_matches_nothing_and_a_port_no_pod_has() -> None:
    objects = copy.deepcopy(build("overlays/production").objects)  # build() is cached: never edit its objects
    for monitor in (o for o in objects if o["kind"] == "PodMonitor"):
        if monitor["metadata"]["name"] == "ragfn-otel-collector":
            monitor["spec"]["podMetricsEndpoints"][0]["port"] = "metric"  # a typo
        if monitor["metadata"]["name"] == "ragfn-queue-proxy":
            monitor["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/part-of": "rag-fn"}
        if monitor["metadata"]["name"] == "ragfn-predictor":
            monitor["spec"]["podMetricsEndpoints"].append({"port": "user-port", "path": "/metrics"})  # twice
    problems = "\n".join(scrape_problems(objects))
    assert "ragfn-otel-collector scrapes Deployment/ragfn-otel-collector on no port" in problems, problems
    assert "ragfn-queue-proxy selects no pod" in problems, problems
    assert "ragfn-predictor scrapes isvc/ragfn-llm on ['user-port', 'user-port']" in problems, problems
