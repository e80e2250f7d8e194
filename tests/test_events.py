"""Event contracts: exported JSON Schemas match the models, and the trigger YAML routes every type."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from ragfn.eventing import events
from ragfn.eventing.triggers import load_triggers

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parent.parent


def test_exported_schemas_have_not_drifted(tmp_path):
    fresh = {p.name: p.read_text() for p in events.export_schemas(tmp_path)}
    committed = {p.name: p.read_text() for p in (REPO / "eventing" / "schemas").glob("*.schema.json")}
    assert committed == fresh, "eventing/schemas is stale: run `make schemas` and commit the result"


def test_schemas_validate_real_model_output():
    doc = events.DocumentVersion(document_id="file:///a.md", version="v1", sequence=events.sequence_key(7))
    sample = events.ChunkBatch(document=doc, batch=0, batches=1, total_chunks=1, chunks=[events.Chunk(
        number=0, text="hi", start=0, end=2, content_hash="0" * 64, tokens=1)])
    schema = json.loads((REPO / "eventing" / "schemas" / f"{events.CHUNKS}.schema.json").read_text())
    jsonschema.validate(sample.model_dump(mode="json"), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"document": {}, "batch": -1}, schema)


def test_sequence_keys_sort_numerically():
    values = [0, 9, 10, 255, 2**64, 2**100]
    assert sorted(map(events.sequence_key, values)) == [events.sequence_key(v) for v in values]


def test_every_consumed_type_has_a_trigger_and_every_trigger_a_known_type():
    triggers = load_triggers(REPO / "eventing" / "triggers")
    for event_type in set(events.EVENT_MODELS) | set(events.STORAGE_TYPES):
        assert any(t.matches({"type": event_type}) for t in triggers), f"no trigger routes {event_type}"
    for event_type in events.CACHE_TYPES:
        assert [t.subscriber for t in triggers if t.matches({"type": event_type})] == ["ragfn-cache-invalidate"]
    assert not any(t.matches({"type": "com.example.unknown"}) for t in triggers)
