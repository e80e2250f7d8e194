"""Generate strict JSON Schemas for the KServe kinds ragfn deploys, from the installed KServe SDK's API models.

KServe publishes its CRDs only as cluster YAML, and no schema package for them exists offline, so the project keeps
its own copy in `manifests/schemas/kserve/` (committed) and `tests/test_manifests.py` checks two things:
the committed files equal what this script generates from the installed `kserve` (drift shows when kserve is
upgraded), and every InferenceService/ServingRuntime in the built overlays validates against them.

Where the pieces come from:
- KServe's own types (V1beta1PredictorSpec, V1alpha1ServingRuntimeSpec, ...): `openapi_types` + `attribute_map`
  of the SDK's generated models, which the KServe release generates from the same Go types as its CRDs.
- The Kubernetes types they embed (Container, Affinity, Volume, ObjectMeta, ...): kubernetes-validate's strict
  definitions for K8S_TYPES, the Kubernetes API KServe 0.21 is built against (its models use PodSpec fields
  first released in 1.36: schedulingGroup, hostnameOverride). Core kinds of our own are checked against 1.32.
- The 7 names the SDK references but does not define: MANUAL below.

Strictness: every object has `additionalProperties: false` (typos are errors), free-form `object` fields stay
free, required fields are KServe's non-omitempty fields (REQUIRED below; the SDK does not record them), and a
manifest may not carry `status`. Usage: `python scripts/kserve_schema.py [--check]`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "manifests" / "schemas" / "kserve"
K8S_TYPES = "1.36"

# (kind, apiVersion, SDK root class, SDK spec class)
KINDS = [
    ("InferenceService", "serving.kserve.io/v1beta1", "V1beta1InferenceService", "V1beta1InferenceServiceSpec"),
    ("ServingRuntime", "serving.kserve.io/v1alpha1", "V1alpha1ServingRuntime", "V1alpha1ServingRuntimeSpec"),
    ("ClusterServingRuntime", "serving.kserve.io/v1alpha1", "V1alpha1ClusterServingRuntime",
     "V1alpha1ServingRuntimeSpec"),
]

# KServe's Go fields without `omitempty` (its CRDs list them as required); by SDK class and JSON name.
REQUIRED = {
    "V1beta1InferenceServiceSpec": ["predictor"],
    "V1alpha1ServingRuntimeSpec": ["containers"],
    "V1alpha1WorkerSpec": ["containers"],
    "V1beta1ModelSpec": ["modelFormat"],
    "V1beta1ModelFormat": ["name"],
    "V1alpha1SupportedModelFormat": ["name"],
}

# ServingRuntimeSpec's fields that are not ServingRuntimePodSpec's: what V1alpha1WorkerSpec leaves out.
_RUNTIME_OWN = {"built_in_adapter", "disabled", "grpc_data_endpoint", "grpc_endpoint", "http_data_endpoint",
                "multi_model", "protocol_versions", "replicas", "storage_helper", "supported_model_formats",
                "worker_spec"}

_QUANTITY = {"$ref": "#/$defs/io.k8s.apimachinery.pkg.api.resource.Quantity"}
# Names the SDK references but does not define, resolved by hand (Go type in KServe/Kubernetes/Knative).
MANUAL: dict[str, object] = {
    "K8sIoApiAppsV1DeploymentStrategy": {"$ref": "#/$defs/io.k8s.api.apps.v1.DeploymentStrategy"},
    "K8sIoApiAutoscalingV2HorizontalPodAutoscalerBehavior":
        {"$ref": "#/$defs/io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerBehavior"},
    "KnativeDevServingPkgApisServingV1TrafficTarget": {  # knative.dev/serving/pkg/apis/serving/v1.TrafficTarget
        "type": "object", "additionalProperties": False,
        "properties": {"tag": {"type": "string"}, "revisionName": {"type": "string"},
                       "configurationName": {"type": "string"}, "latestRevision": {"type": "boolean"},
                       "percent": {"type": "integer", "minimum": 0, "maximum": 100}, "url": {"type": "string"}}},
    "ResourceQuantity": _QUANTITY,  # resource.Quantity: "1Gi" or 2
    "V1Time": {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.Time"},
    "V1beta1MetricQuantity": _QUANTITY,  # a resource.Quantity in KServe's MetricTarget
    "V1alpha1WorkerSpec": "derived",  # ServingRuntimePodSpec + pipelineParallelSize + tensorParallelSize
}
_PRIMITIVE = {"str": {"type": "string"}, "int": {"type": "integer"}, "float": {"type": "number"},
              "bool": {"type": "boolean"}, "object": {}, "datetime": {"type": "string", "format": "date-time"},
              "date": {"type": "string", "format": "date"}}
_LIST = re.compile(r"^(?:list|List)\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\(str, ?(.+)\)|Dict\[str, ?(.+)\])$")


class Generator:
    def __init__(self) -> None:
        import kserve.models
        import kubernetes_validate.utils as kv

        self.models = kserve.models
        self.kube = kv.schema_contents(f"kubernetes-json-schema/v{K8S_TYPES}.0-local-strict/_definitions.json",
                                       K8S_TYPES)["$defs"]
        self.defs: dict[str, object] = {}

    def type_schema(self, name: str) -> object:
        """The schema of one SDK type string: primitives, list[X]/List[X], dict(str, X)/Dict[str, X], classes."""
        name = name.strip()
        if name in _PRIMITIVE:
            return dict(_PRIMITIVE[name])
        if match := _LIST.match(name):
            return {"type": "array", "items": self.type_schema(match.group(1))}
        if match := _DICT.match(name):
            return {"type": "object", "additionalProperties": self.type_schema(match.group(1) or match.group(2))}
        return self.ref(name)

    def ref(self, name: str) -> object:
        manual = MANUAL.get(name)
        if isinstance(manual, dict):
            for target in re.findall(r"#/\$defs/([\w.-]+)", json.dumps(manual)):
                self.kube_def(target)
            return manual
        if manual == "derived" or hasattr(self.models, name):
            if name not in self.defs:
                self.defs[name] = None  # reserve first: the types are recursive
                self.defs[name] = self.model_schema(name)
            return {"$ref": f"#/$defs/{name}"}
        kube = self.kube_name(name)
        if kube is None:
            raise SystemExit(f"kserve_schema: the SDK references {name}, which is neither a KServe model, nor a "
                             f"Kubernetes {K8S_TYPES} type, nor in MANUAL; map it there")
        self.kube_def(kube)
        return {"$ref": f"#/$defs/{kube}"}

    def kube_name(self, sdk_name: str) -> str | None:
        """V1Container -> io.k8s.api.core.v1.Container (core first, then meta, then any other group)."""
        match = re.match(r"^(V\d+(?:alpha\d+|beta\d+)?)(\w+)$", sdk_name)
        if not match:
            return None
        version, kind = match.group(1).lower(), match.group(2)
        candidates = [f"io.k8s.api.core.{version}.{kind}", f"io.k8s.apimachinery.pkg.apis.meta.{version}.{kind}"]
        candidates += sorted(k for k in self.kube if k.endswith(f".{version}.{kind}"))
        return next((c for c in candidates if c in self.kube), None)

    def kube_def(self, name: str) -> None:
        if name in self.defs:
            return
        if name not in self.kube:
            raise SystemExit(f"kserve_schema: Kubernetes {K8S_TYPES} has no definition {name}")
        schema = _strip_descriptions(self.kube[name])
        self.defs[name] = schema
        for target in re.findall(r"#/\$defs/([\w.-]+)", json.dumps(schema)):
            self.kube_def(target)

    def model_schema(self, name: str) -> dict:
        if name == "V1alpha1WorkerSpec":
            spec = self.models.V1alpha1ServingRuntimeSpec
            fields = {k: v for k, v in spec.openapi_types.items() if k not in _RUNTIME_OWN}
            fields |= {"pipeline_parallel_size": "int", "tensor_parallel_size": "int"}
            names = {k: spec.attribute_map.get(k) or _camel(k) for k in fields}
        else:
            cls = getattr(self.models, name)
            fields, names = cls.openapi_types, cls.attribute_map
        schema: dict = {"type": "object", "additionalProperties": False,
                        "properties": {names[k]: self.type_schema(t) for k, t in sorted(fields.items())}}
        if name in REQUIRED:
            missing = set(REQUIRED[name]) - set(schema["properties"])
            if missing:
                raise SystemExit(f"kserve_schema: REQUIRED names {sorted(missing)}, not fields of {name}")
            schema["required"] = REQUIRED[name]
        return schema

    def kind_schema(self, kind: str, api_version: str, root: str, spec: str) -> dict:
        cls = getattr(self.models, root)
        assert {"api_version", "kind", "metadata", "spec"} <= set(cls.openapi_types), root
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://ragfn.dev/schemas/kserve/{_file_stem(kind, api_version)}.json",
            "title": f"{kind} {api_version}",
            "x-generated-by": "scripts/kserve_schema.py",
            "x-kserve-sdk": importlib.metadata.version("kserve"),
            "x-kubernetes-types": K8S_TYPES,
            "type": "object", "additionalProperties": False,
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind},
                           "metadata": self.ref("V1ObjectMeta"), "spec": self.ref(spec)},
        }


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def _strip_descriptions(node: object) -> object:
    """The Kubernetes reference documents these; the committed files stay small and readable in a diff."""
    if isinstance(node, dict):
        return {k: _strip_descriptions(v) for k, v in node.items()
                if not (k == "description" and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip_descriptions(v) for v in node]
    return node


def _file_stem(kind: str, api_version: str) -> str:
    return f"{kind.lower()}-{api_version.replace('/', '-')}"


def generate() -> dict[str, str]:
    """File name -> JSON text, for every kind in KINDS (each file self-contained: its own $defs)."""
    files = {}
    for kind, api_version, root, spec in KINDS:
        gen = Generator()
        schema = gen.kind_schema(kind, api_version, root, spec)
        schema["$defs"] = dict(sorted(gen.defs.items()))
        files[f"{_file_stem(kind, api_version)}.json"] = json.dumps(schema, indent=1, sort_keys=True) + "\n"
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed schemas are out of date")
    args = parser.parse_args()
    stale = []
    for name, text in generate().items():
        path = OUT / name
        if path.is_file() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(("stale: " if args.check else "wrote: ") + str(path))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
