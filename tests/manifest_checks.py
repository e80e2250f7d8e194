"""The machinery of the offline manifest checks (tests/test_manifests.py, tests/test_contracts.py): build, route,
validate, and read the contracts (event types, env variables, images) out of the built objects."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "manifests"
EVENTING = REPO / "eventing"
KSERVE_SCHEMAS = MANIFESTS / "schemas" / "kserve"
NODE_DIR = REPO / "tests" / "manifests"
KUBERNETES_VERSION = "1.32"  # the oldest cluster we support: KServe 0.21 and Knative 1.2x both run on it
_KUSTOMIZATION = ("kustomization.yaml", "kustomization.yml", "Kustomization")

# Kinds no validator has a published schema for. Each is still checked for apiVersion, kind, metadata.name, its
# top-level fields and a strict ObjectMeta (validate.mjs); its spec is not checked. Anything else unrouted fails.
NO_SCHEMA = {
    ("eventing.knative.dev/v1alpha1", "RabbitmqBrokerConfig"): "eventing-rabbitmq CRD; not in @kubernetes-models",
    ("sources.knative.dev/v1beta1", "KafkaSource"): "eventing-kafka CRD; not in @kubernetes-models/knative",
    ("sources.knative.dev/v1", "KafkaSource"): "eventing-kafka CRD; not in @kubernetes-models/knative",
    ("eventing.knative.dev/v1alpha1", "KafkaSink"): "eventing-kafka CRD; not in @kubernetes-models/knative",
    ("sources.knative.dev/v1alpha1", "RabbitmqSource"): "eventing-rabbitmq CRD; not in @kubernetes-models",
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "RabbitMQ cluster operator CRD; no published schema package",
    ("opentelemetry.io/v1beta1", "OpenTelemetryCollector"): "opentelemetry-operator CRD; no schema package offline",
    ("events.cloud.google.com/v1", "CloudPubSubSource"): "knative-gcp CRD (archived); no schema package",
    ("events.cloud.google.com/v1", "CloudStorageSource"): "knative-gcp CRD (archived); no schema package",
}


@dataclass
class Build:
    """One `kubectl kustomize` run: its objects, or kustomize's error."""

    name: str
    path: Path
    objects: list[dict] = field(default_factory=list)
    error: str | None = None
    note: str = ""


# Component folders, and the base each is built on when no overlay uses it.
COMPONENT_ROOTS = {MANIFESTS / "components": MANIFESTS / "base", EVENTING / "components": EVENTING}


def trees() -> dict[str, Path]:
    """What is built on its own: every overlay, eventing/, and each component no overlay uses (on its base)."""
    found: dict[str, Path] = {}
    overlays = MANIFESTS / "overlays"
    for path in sorted(overlays.iterdir()) if overlays.is_dir() else []:
        if _kustomization_file(path):
            found[f"overlays/{path.name}"] = path
    for path in _unused_components(list(found.values())):
        found[str(path.relative_to(REPO))] = path
    found["eventing"] = EVENTING
    return found


def _kustomization_file(path: Path) -> Path | None:
    return next((path / n for n in _KUSTOMIZATION if (path / n).is_file()), None)


def _unused_components(overlays: list[Path]) -> list[Path]:
    used: set[Path] = set()
    for overlay in overlays:
        doc = yaml.safe_load(_kustomization_file(overlay).read_text()) or {}
        used |= {(overlay / c).resolve() for c in doc.get("components") or []}
    return [p for root in COMPONENT_ROOTS if root.is_dir() for p in sorted(root.iterdir())
            if _kustomization_file(p) and p.resolve() not in used]


def kubectl() -> str:
    exe = shutil.which("kubectl")
    if exe is None:
        raise RuntimeError("kubectl is not on PATH: install kubectl >= 1.27 (kustomize is built in), e.g. from the "
                           "Kubernetes apt repository or google-cloud-sdk's kubectl package")
    return exe


@functools.cache
def build(name: str) -> Build:
    """`kubectl kustomize` one tree; a component no overlay uses is built on its base in a temporary root."""
    path = trees().get(name)
    if path is None or not _kustomization_file(path):
        return Build(name, path or REPO, error=f"{name}: no kustomization.yaml")
    base = COMPONENT_ROOTS.get(path.parent)
    if base is None:
        return _kustomize(path, name)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump({  # kustomize takes relative paths only
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [os.path.relpath(base, tmp)], "components": [os.path.relpath(path, tmp)]}))
        result = _kustomize(Path(tmp), name)
    result.path, result.note = path, f"in no overlay, so built on {base.relative_to(REPO)} alone"
    if result.error:
        result.error = f"({result.note})\n{result.error}"
    return result


def _kustomize(path: Path, name: str) -> Build:
    proc = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return Build(name, path, error=proc.stderr.strip() or f"kubectl kustomize exited {proc.returncode}")
    objects = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    return Build(name, path, objects=objects)


def ident(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('apiVersion')} {obj.get('kind')} {meta.get('namespace', '') + '/' if meta.get('namespace') else ''}{meta.get('name')}"


# ---- routing: every object goes to exactly one validator


def group_of(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def kserve_schema_path(obj: dict) -> Path:
    return KSERVE_SCHEMAS / f"{obj['kind'].lower()}-{obj['apiVersion'].replace('/', '-')}.json"


def route(obj: dict) -> str:
    """kubernetes | kserve | npm | none (NO_SCHEMA); raises LookupError for a kind nothing can validate."""
    api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
    group = group_of(api_version)
    if group == "" or "." not in group or group.endswith(".k8s.io"):
        return "kubernetes"  # core and built-in groups: apps, batch, policy, networking.k8s.io, rbac...
    if (api_version, kind) in NO_SCHEMA:
        return "none"
    if group == "serving.kserve.io" and kserve_schema_path(obj).is_file():
        return "kserve"
    if group.endswith(".knative.dev") or group in ("keda.sh", "eventing.keda.sh", "monitoring.coreos.com"):
        return "npm"  # validate.mjs says if the package has no model for the kind; then it must be in NO_SCHEMA
    raise LookupError(f"{api_version} {kind}: no validator knows this kind; route it in tests/manifest_checks.py "
                      "or list it in NO_SCHEMA with the reason no schema exists")


# ---- the validators; each returns a list of problems, empty when the object is valid


def validate_kubernetes(obj: dict) -> list[str]:
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except ValidationError as exc:
        where = "/".join(str(p) for p in exc.path)
        return [f"/{where}: {exc.message}"]
    except SchemaNotFoundError as exc:
        return [exc.message]
    return []


@functools.cache
def _kserve_validator(path: Path):
    import jsonschema

    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def validate_kserve(obj: dict) -> list[str]:
    validator = _kserve_validator(kserve_schema_path(obj))
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    return ["/" + "/".join(str(p) for p in e.absolute_path) + f": {e.message}" for e in errors]


def run_node(objects: list[dict]) -> list[dict]:
    """tests/manifests/validate.mjs over `objects`: one {schema, errors, unknown, ignored} per object."""
    if shutil.which("node") is None:
        raise RuntimeError("node is not on PATH: the Knative/KEDA checks need node >= 20 (scripts/node_deps.sh)")
    if not (NODE_DIR / "node_modules" / "@kubernetes-models" / "knative").is_dir():
        raise RuntimeError("tests/manifests/node_modules is missing: run `bash scripts/node_deps.sh`")
    proc = subprocess.run(["node", str(NODE_DIR / "validate.mjs")], input=json.dumps(objects), capture_output=True,
                          text=True, timeout=120, cwd=NODE_DIR)
    if proc.returncode != 0:
        raise RuntimeError(f"validate.mjs failed ({proc.returncode}): {proc.stderr.strip()}")
    results = json.loads(proc.stdout)
    assert len(results) == len(objects)
    return results


def node_problems(obj: dict, result: dict) -> list[str]:
    problems = [f"{e['path'] or '/'}: {e['message']}" for e in result["errors"]]
    problems += [f"{u['path']}: unknown field (the schema knows {', '.join(u['known'])})" for u in result["unknown"]]
    if result["schema"] is None and (obj.get("apiVersion"), obj.get("kind")) not in NO_SCHEMA:
        problems.append("@kubernetes-models has no schema for this kind: list it in NO_SCHEMA with the reason")
    return problems


def validate_all(objects: list[dict]) -> list[tuple[dict, str, list[str]]]:
    """(object, validator, problems) for every object; one node run for all the npm and metadata-only ones."""
    routed = []
    for obj in objects:
        try:
            routed.append((obj, route(obj)))
        except LookupError as exc:
            routed.append((obj, "unrouted", [str(exc)]))
    node_objs = [r[0] for r in routed if r[1] in ("npm", "none")]
    node_results = iter(run_node(node_objs) if node_objs else [])
    out = []
    for item in routed:
        obj, how = item[0], item[1]
        if how == "unrouted":
            out.append((obj, how, item[2]))
        elif how in ("npm", "none"):
            out.append((obj, how, node_problems(obj, next(node_results))))
        else:
            out.append((obj, how, validate_kubernetes(obj) if how == "kubernetes" else validate_kserve(obj)))
    return out


def mutations(obj: dict) -> Iterator[tuple[str, dict]]:
    """Broken copies every validator must reject: a typo field at the top, a typo in metadata, a wrong type."""
    bad = copy.deepcopy(obj)
    bad["ragfnTypo"] = 1
    yield "unknown top-level field", bad
    bad = copy.deepcopy(obj)
    bad.setdefault("metadata", {})["labelz"] = {"a": "b"}
    yield "unknown metadata field", bad
    bad = copy.deepcopy(obj)
    bad.setdefault("metadata", {})["name"] = 12345
    yield "metadata.name of the wrong type", bad


# ---- contracts


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def walk(node: object, path: str = "") -> Iterator[tuple[str, object]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}/{i}")


def containers(obj: dict) -> Iterator[tuple[str, dict]]:
    """Every container-shaped dict: pod templates' containers/initContainers, Knative and KServe containers,
    and KServe's inline ones (predictor.model, transformer...): anything with an `image` or an `env` list."""
    for path, node in walk(obj):
        if isinstance(node, dict) and (isinstance(node.get("image"), str) or isinstance(node.get("env"), list)):
            yield path, node


def type_tests(expr: dict) -> Iterator[tuple[str, str]]:
    """(dialect, value) for every test on the `type` attribute in a Trigger's spec.filters expression."""
    for dialect, body in expr.items():
        if dialect in ("all", "any"):
            for sub in body or []:
                yield from type_tests(sub)
        elif dialect == "not":
            yield from type_tests(body or {})
        elif dialect in ("exact", "prefix", "suffix") and "type" in (body or {}):
            yield dialect, body["type"]
        elif dialect == "cesql":
            yield "cesql", body


def may_match(expr: dict, event_type: str) -> bool:
    """Could an event of this type pass `expr`? Attributes other than `type` count as satisfiable."""
    (dialect, body), = expr.items()
    if dialect == "all":
        return all(may_match(e, event_type) for e in body)
    if dialect == "any":
        return any(may_match(e, event_type) for e in body)
    if dialect == "not":
        inner = body or {}
        return not may_match(inner, event_type) if _only_type(inner) else True
    if dialect == "cesql":
        return True
    value = (body or {}).get("type")
    if value is None:
        return True
    return {"exact": event_type == value, "prefix": event_type.startswith(value),
            "suffix": event_type.endswith(value)}.get(dialect, True)


def _only_type(expr: dict) -> bool:
    (dialect, body), = expr.items()
    if dialect in ("all", "any"):
        return all(_only_type(e) for e in body)
    if dialect == "not":
        return _only_type(body)
    return isinstance(body, dict) and set(body) == {"type"}


def trigger_consumes(trigger: dict, event_type: str) -> bool:
    spec = trigger.get("spec") or {}
    wanted = ((spec.get("filter") or {}).get("attributes") or {}).get("type")
    if wanted is not None and wanted != event_type:
        return False
    return all(may_match(e, event_type) for e in spec.get("filters") or [])


def image_parts(image: str) -> tuple[str, str, str | None, str | None]:
    """registry/repository path, last path segment, tag, digest."""
    ref, _, digest = image.partition("@")
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    tag = ref[colon + 1:] if colon > slash else None
    name = ref[:colon] if colon > slash else ref
    return name, name.rsplit("/", 1)[-1], tag, digest or None


def dockerfile_targets() -> dict[str, str]:
    """Deployable image -> where it is built: each Dockerfile stage (`FROM ... AS <target>`) that no other stage
    builds on (`FROM <stage>`) or copies from (`COPY --from=<stage>`), so intermediate stages do not count; and
    each functions/*/func.yaml's function name (`func build` makes an image of that name)."""
    targets: dict[str, str] = {}
    skip = {".venv", "node_modules", ".git", "build", ".ragfn"}
    for path in sorted(REPO.rglob("*")):
        if skip & set(path.relative_to(REPO).parts) or not path.is_file():
            continue
        if path.name == "Dockerfile" or path.name.startswith("Dockerfile.") or path.name.endswith(".Dockerfile"):
            text = path.read_text()
            stages = re.findall(r"^\s*FROM\s+(?:--\S+\s+)*\S+\s+AS\s+(\S+)\s*$", text, re.IGNORECASE | re.MULTILINE)
            used = set(re.findall(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)", text, re.IGNORECASE | re.MULTILINE))
            used |= set(re.findall(r"--from=(\S+)", text))
            targets |= {stage: str(path.relative_to(REPO)) for stage in stages if stage not in used}
        elif path.name == "func.yaml" and path.parent.parent.name == "functions":
            name = (yaml.safe_load(path.read_text()) or {}).get("name")
            if name:
                targets[name] = str(path.relative_to(REPO))
    return targets
