"""Contracts between the manifests and the code (issue 6), checked on the built overlays and eventing/:
- every Trigger filter names an event type defined in ragfn/eventing/events.py, and filters on the type at all;
- every event type that reaches the broker (events.PRODUCERS, EVENT_MODELS, STORAGE_TYPES) has a Trigger consuming
  it, or is in events.TERMINAL_TYPES (which then has none);
- every environment variable a ragfn container gets (env, and envFrom ConfigMaps/Secrets in the build, and
  functions/*/func.yaml run.envs) is read by a settings class (ragfn.core.config.Settings, inference's
  PredictorSettings, ui's UISettings: names derived from the pydantic models) or is in STANDARD_ENV with a reason;
- every image is a build target (a Dockerfile stage `FROM ... AS <target>` that no other stage builds on or
  copies from, or a functions/*/func.yaml name: the image's last path segment, after kustomize's `images:`
  rewriting, equals the target, with or without a `ragfn-` prefix; the Dockerfile names them ragfn/<target>), or a
  known third-party image (THIRD_PARTY) pinned to a tag other than `latest` or to a digest; and every Dockerfile
  target is deployed by some tree.
How the trees are built, and the schema checks: tests/test_manifests.py.
"""

from __future__ import annotations

import functools
import re

import pytest
import yaml
from manifest_checks import (
    EVENTING,
    REPO,
    build,
    containers,
    dockerfile_targets,
    ident,
    image_parts,
    trees,
    trigger_consumes,
    type_tests,
)
from pydantic import AliasChoices, AliasPath

pytestmark = pytest.mark.integration

TREES = list(trees())
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9-]*(\.[A-Za-z0-9_-]+)+$")

# Variables a ragfn container may get that no ragfn settings class declares, each read by something it runs.
STANDARD_ENV = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "OpenTelemetry SDK exporter (ragfn.core.telemetry enables OTLP when it is set)",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "OpenTelemetry SDK exporter",
    "OTEL_SERVICE_NAME": "OpenTelemetry SDK resource",
    "OTEL_RESOURCE_ATTRIBUTES": "OpenTelemetry SDK resource",
    "OTEL_TRACES_SAMPLER": "OpenTelemetry SDK sampler",
    "OTEL_TRACES_SAMPLER_ARG": "OpenTelemetry SDK sampler",
    "K_CE_OVERRIDES": "Knative SinkBinding: extensions added to outgoing events",
    "FUNCTION_TARGET": "functions-framework: the function to serve",
    "FUNCTION_SIGNATURE_TYPE": "functions-framework: http or cloudevent",
    "THREADS": "functions-framework's gunicorn: threads per worker",
    "WORKERS": "functions-framework's gunicorn: worker processes",
    "AWS_ACCESS_KEY_ID": "boto3's credential chain (ragfn's s3:// objects)",
    "AWS_SECRET_ACCESS_KEY": "boto3's credential chain (ragfn's s3:// objects)",
    "AWS_SESSION_TOKEN": "boto3's credential chain (ragfn's s3:// objects)",
    "AWS_REGION": "boto3: the bucket's region",
    "AWS_DEFAULT_REGION": "boto3: the bucket's region",
    "GOOGLE_APPLICATION_CREDENTIALS": "google-cloud-storage: a service account key file (gs:// objects)",
    "HF_HOME": "huggingface_hub cache folder (vLLM downloads the model there)",
    "HF_HUB_OFFLINE": "huggingface_hub: no downloads (a model baked into the image or on a volume)",
}
# Third-party images (by last path segment) and the variables each reads itself.
THIRD_PARTY = {
    "redis": ("Redis: the semantic cache", re.compile(r"^REDIS_\w+$")),
    "chroma": ("Chroma server: the vector store",
               re.compile(r"^(CHROMA_\w+|IS_PERSISTENT|PERSIST_DIRECTORY|ANONYMIZED_TELEMETRY|ALLOW_RESET)$")),
    "opentelemetry-collector": ("OpenTelemetry collector", re.compile(r"^(GOMEMLIMIT|K8S_\w+|POD_\w+)$")),
    "opentelemetry-collector-contrib": ("OpenTelemetry collector", re.compile(r"^(GOMEMLIMIT|K8S_\w+|POD_\w+)$")),
    "opentelemetry-collector-k8s": ("OpenTelemetry collector", re.compile(r"^(GOMEMLIMIT|K8S_\w+|POD_\w+)$")),
}


def built_objects(tree: str) -> list[dict]:
    result = build(tree)
    if result.error:
        pytest.fail(f"{tree} does not build (see tests/test_manifests.py::test_builds)")
    return result.objects


def all_triggers() -> list[tuple[str, dict]]:
    """(where, Trigger) from eventing/triggers/*.yaml (what the local broker reads) and every built tree."""
    found = []
    for path in sorted((EVENTING / "triggers").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Trigger":
                found.append((str(path.relative_to(REPO)), doc))
    for tree in TREES:
        result = build(tree)
        found += [(tree, obj) for obj in result.objects if obj.get("kind") == "Trigger"]
    return found


def defined_types() -> set[str]:
    """Every event type ragfn/eventing/events.py names: EVENT_MODELS' keys, and its UPPER_CASE constants and tuples."""
    from ragfn.eventing import events

    types = set(events.EVENT_MODELS)
    for name, value in vars(events).items():
        if not name.isupper():
            continue
        values = value if isinstance(value, tuple) else (value,)
        types |= {v for v in values if isinstance(v, str) and _EVENT_TYPE.match(v)}
    return types


def produced_types() -> set[str]:
    """What goes onto the broker: the keys of events.PRODUCERS (type -> who sends it), which must cover ragfn's
    own types (EVENT_MODELS) and the storage notifications the bucket sources deliver."""
    from ragfn.eventing import events

    return set(events.PRODUCERS) | set(events.EVENT_MODELS) | set(events.STORAGE_TYPES)


def trigger_problems(triggers: list[tuple[str, dict]], known: set[str]) -> list[str]:
    problems = []
    for where, trigger in triggers:
        spec = trigger.get("spec") or {}
        tests = []
        exact = ((spec.get("filter") or {}).get("attributes") or {}).get("type")
        if exact is not None:
            tests.append(("exact", exact))
        for expr in spec.get("filters") or []:
            tests += list(type_tests(expr))
        name = f"{where}: Trigger {trigger['metadata']['name']}"
        if not tests:
            problems.append(f"{name} does not filter on the event type, so it receives every event")
        for dialect, value in tests:
            ok = {"exact": lambda v: v in known, "prefix": lambda v: any(t.startswith(v) for t in known),
                  "suffix": lambda v: any(t.endswith(v) for t in known)}.get(dialect, lambda v: False)(value)
            if not ok:
                hint = " (CE SQL filters cannot be checked: use exact/prefix/suffix)" if dialect == "cesql" else ""
                problems.append(f"{name}: {dialect} type {value!r} is not an event type in ragfn/eventing/events.py{hint}")
    return problems


def test_every_trigger_filter_names_a_defined_event_type() -> None:
    triggers = all_triggers()
    assert triggers, "no Trigger in eventing/triggers or in any built tree"
    problems = trigger_problems(triggers, defined_types())
    assert not problems, "\n".join(problems)


def test_trigger_checks_catch_unknown_types_and_tell_consumers() -> None:
    def trigger(name: str, spec: dict) -> tuple[str, dict]:
        return "fixture", {"kind": "Trigger", "metadata": {"name": name}, "spec": spec}

    known = {"dev.ragfn.chunks.v1", "dev.ragfn.embedded.v1"}
    bad = [trigger("typo", {"filter": {"attributes": {"type": "dev.ragfn.chunk.v1"}}}),
           trigger("nested", {"filters": [{"any": [{"exact": {"type": "dev.ragfn.chunks.v1"}},
                                                   {"not": {"prefix": {"type": "dev.other."}}}]}]}),
           trigger("everything", {"filters": [{"exact": {"source": "ragfn"}}]}),
           trigger("sql", {"filters": [{"cesql": "type = 'dev.ragfn.chunks.v1'"}]})]
    problems = trigger_problems(bad, known)
    assert [p.split(":")[1].split()[1] for p in problems] == ["typo", "nested", "everything", "sql"]
    good = trigger("ok", {"filters": [{"any": [{"exact": {"type": "dev.ragfn.chunks.v1"}},
                                               {"suffix": {"type": "embedded.v1"}}]}]})[1]
    assert not trigger_problems([("fixture", good)], known)
    assert trigger_consumes(good, "dev.ragfn.embedded.v1") and not trigger_consumes(good, "dev.ragfn.other.v1")
    negated = trigger("not", {"filters": [{"not": {"exact": {"type": "dev.ragfn.chunks.v1"}}}]})[1]
    assert not trigger_consumes(negated, "dev.ragfn.chunks.v1") and trigger_consumes(negated, "dev.ragfn.x.v1")


def test_every_produced_event_type_has_a_consumer_or_is_terminal() -> None:
    from ragfn.eventing import events

    terminal = set(getattr(events, "TERMINAL_TYPES", ()))
    triggers = [t for _, t in all_triggers()]
    orphans = sorted(t for t in produced_types() - terminal if not any(trigger_consumes(tr, t) for tr in triggers))
    assert not orphans, (f"produced but no Trigger consumes them: {orphans}; add a Trigger in eventing/triggers, or "
                         "list them in ragfn.eventing.events.TERMINAL_TYPES with the reason")


def test_terminal_types_are_defined_and_have_no_consumer() -> None:
    from ragfn.eventing import events

    terminal = set(getattr(events, "TERMINAL_TYPES", ()))
    assert terminal <= defined_types(), f"TERMINAL_TYPES names unknown types: {terminal - defined_types()}"
    triggers = all_triggers()
    consumed = sorted(f"{t} (by {where}: {tr['metadata']['name']})" for t in terminal for where, tr in triggers
                      if trigger_consumes(tr, t))
    assert not consumed, f"documented as terminal, yet consumed: {consumed}"


# ---- environment variables


@functools.cache
def settings_env_names() -> dict[str, str]:
    """Every variable name a settings class reads -> the class, from the pydantic models themselves."""
    from inference.settings import PredictorSettings
    from ragfn.core import config
    from ui.settings import UISettings

    names = {config.PROFILE_ENV: "ragfn.core.config's profile source (ragfn.core.config.PROFILE_ENV)"}
    for cls in (config.Settings, PredictorSettings, UISettings):
        prefix = cls.model_config.get("env_prefix", "")
        for field_name, info in cls.model_fields.items():
            alias = info.validation_alias or info.alias
            if isinstance(alias, AliasChoices):
                choices = [c.path[0] if isinstance(c, AliasPath) else c for c in alias.choices]
            elif isinstance(alias, AliasPath):
                choices = [alias.path[0]]
            elif isinstance(alias, str):
                choices = [alias]
            else:
                choices = [prefix + field_name]
            names |= {str(c).upper(): f"{cls.__module__}.{cls.__name__}.{field_name}" for c in choices}
    return names


def test_settings_names_are_derived() -> None:
    names = settings_env_names()
    assert {"RAGFN_HOME", "RAGFN_SINK", "K_SINK", "RAGFN_LLM_ENGINE", "RAGFN_UI_GATEWAY_URL", "RAGFN_PROFILE"} <= set(names)


def third_party(image: str | None) -> str | None:
    if image is None:
        return None
    _, last, _, _ = image_parts(image)
    return last if last in THIRD_PARTY else None


def env_entries(objects: list[dict]) -> list[tuple[str, str | None, str]]:
    """(where, image, variable) for every variable the built objects give a container."""
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects if o.get("kind") in ("ConfigMap", "Secret")}
    found = []
    for obj in objects:
        for path, container in containers(obj):
            image, where = container.get("image"), f"{ident(obj)} {path}"
            for var in container.get("env") or []:
                found.append((where, image, var.get("name")))
            for source in container.get("envFrom") or []:
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    ref = (source.get(key) or {}).get("name")
                    target = by_name.get((kind, ref))
                    if ref and target:
                        data = {**(target.get("data") or {}), **(target.get("stringData") or {})}
                        found += [(f"{where} envFrom {kind}/{ref}", image, (source.get("prefix") or "") + k)
                                  for k in data]
    return found


def env_problems(entries: list[tuple[str, str | None, str]]) -> list[str]:
    read = settings_env_names()
    problems = []
    for where, image, name in entries:
        vendor = third_party(image)
        if vendor:
            if not THIRD_PARTY[vendor][1].match(name or ""):
                problems.append(f"{where}: {name} is not a variable {THIRD_PARTY[vendor][0]} reads (THIRD_PARTY)")
        elif name not in read and name not in STANDARD_ENV:
            problems.append(f"{where}: {name} is read by no settings class (nor listed in STANDARD_ENV)")
    return problems


@pytest.mark.parametrize("tree", TREES)
def test_every_env_variable_is_read_by_a_settings_class(tree: str) -> None:
    entries = env_entries(built_objects(tree))
    problems = env_problems(entries)
    assert not problems, "\n".join(problems)


def test_func_yaml_run_envs_are_read_by_a_settings_class() -> None:
    entries = []
    for path in sorted((REPO / "functions").glob("*/func.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        entries += [(str(path.relative_to(REPO)), None, e.get("name")) for e in (doc.get("run") or {}).get("envs") or []]
    problems = env_problems(entries)
    assert not problems, "\n".join(problems)


def test_env_check_rejects_an_unread_variable() -> None:
    entries = [("fixture", "ghcr.io/x/ragfn-chunk:1", "RAGFN_CHUNK_TOKEN"), ("fixture", "redis:7.2", "RAGFN_HOME"),
               ("fixture", "ghcr.io/x/ragfn-chunk:1", "RAGFN_CHUNK_TOKENS"), ("fixture", "redis:7.2", "REDIS_ARGS")]
    problems = env_problems(entries)
    assert len(problems) == 2 and "RAGFN_CHUNK_TOKEN " in problems[0] and "RAGFN_HOME" in problems[1]


# ---- images


def image_problems(images: list[tuple[str, str]], targets: dict[str, str]) -> list[str]:
    names = {t.removeprefix("ragfn-") for t in targets} | set(targets)
    problems = []
    for where, image in images:
        _, last, tag, digest = image_parts(image)
        if last in names or last.removeprefix("ragfn-") in names:
            continue
        if last in THIRD_PARTY:
            if not digest and (tag is None or tag == "latest"):
                problems.append(f"{where}: third-party image {image} must be pinned to a tag (not latest) or digest")
            continue
        problems.append(f"{where}: image {image} is neither a build target ({sorted(targets)}) nor a known "
                        "third-party image (THIRD_PARTY)")
    return problems


def manifest_images(tree: str, *, lenient: bool = False) -> list[tuple[str, str]]:
    """(where, image) in a built tree; lenient: a tree that does not build has none (test_builds reports it)."""
    objects = build(tree).objects if lenient else built_objects(tree)
    return [(f"{ident(obj)} {path}", c["image"]) for obj in objects for path, c in containers(obj)
            if isinstance(c.get("image"), str)]


def test_every_dockerfile_target_is_deployed() -> None:
    """The other direction: each deployable Dockerfile target is the image of some object in some tree."""
    targets = {t: where for t, where in dockerfile_targets().items() if not where.endswith("func.yaml")}
    assert targets, "no Dockerfile with named stages (FROM ... AS <target>) in the repository"
    used = {image_parts(image)[1] for tree in TREES for _, image in manifest_images(tree, lenient=True)}
    used |= {u.removeprefix("ragfn-") for u in used}
    unused = sorted(t for t in targets if t not in used and t.removeprefix("ragfn-") not in used)
    assert not unused, f"Dockerfile targets no manifest deploys: {unused}"


@pytest.mark.parametrize("tree", TREES)
def test_every_image_is_a_build_target_or_a_pinned_third_party_image(tree: str) -> None:
    problems = image_problems(manifest_images(tree), dockerfile_targets())
    assert not problems, "\n".join(problems)


def test_image_check_rejects_unknown_and_unpinned_images() -> None:
    targets = {"chunk": "Dockerfile", "ragfn-predictor": "Dockerfile"}
    images = [("a", "ghcr.io/acme/ragfn-chunk:0.1"), ("b", "registry:5000/ragfn/predictor@sha256:" + "0" * 64),
              ("c", "redis:7.2.5"), ("d", "chroma"), ("e", "chromadb/chroma:latest"), ("f", "ghcr.io/acme/other:1")]
    problems = image_problems(images, targets)
    assert [p.split(":")[0] for p in problems] == ["d", "e", "f"]
