"""Every CloudEvent ragfn produces or consumes: a versioned `type` and a pydantic model for its data.

Routing (the Triggers in `eventing/triggers/`) filters on these types, and `eventing/schemas/` holds their
JSON Schemas, exported by `python -m ragfn.eventing.events` and checked for drift by the tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SOURCE = "ragfn"

# ragfn's own types. The ".v1" suffix versions the data schema: a breaking change gets ".v2" beside it.
DOCUMENT_UPSERTED = "dev.ragfn.document.upserted.v1"
DOCUMENT_DELETED = "dev.ragfn.document.deleted.v1"
CHUNKS = "dev.ragfn.chunks.v1"
EMBEDDED = "dev.ragfn.embedded.v1"
DOCUMENT_TOMBSTONED = "dev.ragfn.document.tombstoned.v1"
DOCUMENT_INDEXED = "dev.ragfn.document.indexed.v1"
DOCUMENT_REMOVED = "dev.ragfn.document.removed.v1"
RESYNC_REQUESTED = "dev.ragfn.resync.requested.v1"
ANSWER_SAMPLED = "dev.ragfn.answer.sampled.v1"

# Storage providers' types that the chunk function accepts as they are.
GCS_FINALIZED = "google.cloud.storage.object.v1.finalized"
GCS_DELETED = "google.cloud.storage.object.v1.deleted"
# S3 and MinIO notifications carry their own record format; Knative sources wrap them in these types
# (and MinIO's webhook posts them with no CloudEvent envelope at all, see ragfn.ingest.storage_events).
S3_NOTIFICATION = "com.amazonaws.s3.notification"
MINIO_NOTIFICATION = "io.min.s3.notification"
# Knative Eventing's IntegrationSource in aws.sqs mode: the data is the SQS message body, which for a bucket wired
# as S3 -> SQS (or S3 -> SNS -> SQS) is the S3 notification (or the SNS envelope around it).
AWS_SQS_MESSAGE = "dev.knative.connector.event.aws-sqs"
# An Amazon EventBridge event as a CloudEvent: the data is the EventBridge event itself (detail-type, source,
# detail), as TriggerMesh's AWSEventBridgeSource sends it and as ragfn-bucket-events republishes an EventBridge API
# destination's post. S3's EventBridge events also reach chunk inside SQS messages (AWS_SQS_MESSAGE).
EVENTBRIDGE_EVENT = "com.amazon.events.event"
# PingSource cannot choose its events' type: the resync one marks them ragfnjob=resync (eventing/sources/resync.yaml).
PING = "dev.knative.sources.ping"

STORAGE_TYPES = (GCS_FINALIZED, GCS_DELETED, S3_NOTIFICATION, MINIO_NOTIFICATION, AWS_SQS_MESSAGE, EVENTBRIDGE_EVENT)
CACHE_TYPES = (DOCUMENT_INDEXED, DOCUMENT_REMOVED)  # the end of ingestion; the semantic cache evicts on them

# Who sends each type onto the broker. Every one has a Trigger (eventing/triggers/) unless it is in TERMINAL_TYPES.
PRODUCERS: dict[str, tuple[str, ...]] = {
    DOCUMENT_UPSERTED: ("ragfn ingest --dev", "the ask gateway (uploads)", "ragfn-resync"),
    DOCUMENT_DELETED: ("ragfn ingest --dev --prune", "ragfn-resync"),
    CHUNKS: ("ragfn-chunk",),
    EMBEDDED: ("ragfn-embed (reply)",),
    DOCUMENT_TOMBSTONED: ("ragfn-chunk",),
    DOCUMENT_INDEXED: ("ragfn-index (reply)",),
    DOCUMENT_REMOVED: ("ragfn-index (reply)",),
    RESYNC_REQUESTED: ("ragfn-resync (the next page of a large prefix)", "operators (any CloudEvents client)"),
    ANSWER_SAMPLED: ("the ask gateway (a sampled share of live answers, when RAGFN_JUDGE_URL is set)",),
    GCS_FINALIZED: ("ragfn-bucket-events (GCS Pub/Sub push)",),
    GCS_DELETED: ("ragfn-bucket-events (GCS Pub/Sub push)",),
    S3_NOTIFICATION: ("ragfn-bucket-events (S3-style webhook posts)",),
    MINIO_NOTIFICATION: ("ragfn-bucket-events (MinIO webhook)",),
    AWS_SQS_MESSAGE: ("IntegrationSource ragfn-s3 (eventing/components/source-s3-sqs)",),
    EVENTBRIDGE_EVENT: ("ragfn-bucket-events (an EventBridge API destination)", "an EventBridge source such as "
                        "TriggerMesh's AWSEventBridgeSource"),
    PING: ("PingSource ragfn-resync (eventing/sources/resync.yaml)",),
}
# Produced types that nothing consumes on purpose, each with the reason. None today: document.indexed and
# document.removed, the end of ingestion, drive the cache-invalidate function. A new type that is only for
# observers (audit, metrics) goes here with its reason, so the contract test knows it was not forgotten.
TERMINAL_TYPES: dict[str, str] = {}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DocumentUpserted(_Model):
    """Ingest (or re-ingest) the object at `uri`. Sent by the CLI, the folder watcher and anyone else."""

    uri: str = Field(description="file://, s3:// or gs:// URI of the object")
    collection: str = "default"
    tenant: str | None = None
    groups: list[str] = Field(default_factory=list, description="ACL groups allowed to read the document")
    version: str | None = Field(None, description="etag/generation/content hash; the content hash when omitted")
    sequence: int | None = Field(None, ge=0, description="orders versions; the object's mtime or the event time when omitted")
    content_type: str | None = None


class DocumentDeleted(_Model):
    uri: str
    collection: str = "default"
    sequence: int | None = Field(None, ge=0, description="orders the delete against upserts; the event time when omitted")


class DocumentVersion(_Model):
    """One version of one document: what every chunk, vector and index write is keyed by."""

    collection: str = "default"
    document_id: str = Field(description="the canonical object URI")
    version: str = Field(description="etag, generation or content hash")
    sequence: str = Field(description="32 hex digits; a larger value is a newer version", pattern=r"^[0-9a-f]{32}$")
    tenant: str | None = None
    groups: list[str] = Field(default_factory=list)
    content_type: str | None = None
    size: int = Field(0, ge=0)
    chunking: str | None = Field(None, description="the chunking config the chunks were cut with, e.g. 96/16")


class Chunk(_Model):
    number: int = Field(ge=0, description="position of the chunk in its document")
    text: str
    start: int = Field(ge=0, description="character offset of the chunk in the document's text")
    end: int = Field(ge=0)
    heading_path: list[str] = Field(default_factory=list)
    content_hash: str = Field(description="sha256 of text: lets embed reuse vectors of unchanged chunks")
    occurrence: int = Field(0, ge=0, description="how many earlier chunks of the document have the same text")
    tokens: int = Field(ge=0, description="tokens under the embedder's tokenizer")


class ChunkBatch(_Model):
    document: DocumentVersion
    batch: int = Field(ge=0)
    batches: int = Field(ge=1)
    total_chunks: int = Field(ge=1)
    chunks: list[Chunk]


class EmbeddedBatch(_Model):
    document: DocumentVersion
    batch: int = Field(ge=0)
    batches: int = Field(ge=1)
    total_chunks: int = Field(ge=1)
    chunks: list[Chunk]
    embedder: str = Field(description="model name; the index refuses vectors from a different embedder")
    dimensions: int = Field(ge=1)
    vectors: list[str] = Field(description="one base64 little-endian float32 vector per chunk")
    reused: int = Field(0, ge=0, description="vectors taken from the index instead of re-embedded")


class DocumentTombstoned(_Model):
    """A document was deleted at `sequence`: every chunk of it at or before that sequence goes."""

    collection: str = "default"
    document_id: str
    sequence: str = Field(pattern=r"^[0-9a-f]{32}$")


class DocumentIndexed(_Model):
    collection: str
    document_id: str
    version: str
    sequence: str
    chunks: int
    tenant: str | None = None
    replaced_versions: list[str] = Field(default_factory=list)


class DocumentRemoved(_Model):
    collection: str
    document_id: str
    sequence: str
    chunks_removed: int
    reason: Literal["deleted", "pruned"] = "deleted"


class ResyncRequested(_Model):
    """Re-list a folder or bucket prefix and announce what changed: nightly (a PingSource), or on demand.

    Every object found gets a document.upserted (chunk skips unchanged ones); with `prune`, every indexed document
    under `uri` that is gone gets a document.deleted. Large prefixes are done `page_size` objects at a time: each
    page ends by sending the next page's request, with `start_after` set, back through the broker.
    """

    uri: str = Field(description="folder or bucket prefix: file:///srv/docs/, s3://bucket/prefix/, gs://bucket/")
    collection: str = "default"
    prune: bool = Field(False, description="also delete indexed documents under `uri` whose objects are gone")
    tenant: str | None = Field(None, description="owner of every document found; else each object's ragfn-tenant")
    groups: list[str] = Field(default_factory=list, description="ACL groups; else each object's ragfn-groups")
    page_size: int = Field(500, ge=1, le=10_000, description="documents announced per invocation")
    start_after: str | None = Field(None, description="continuation: the last document URI the previous page did")


class SampledPassage(_Model):
    n: int = Field(ge=1, description="the [n] the answer cites it by")
    text: str = Field(max_length=2000)


class AnswerSampled(_Model):
    """A live answer the ask gateway sampled for the background judge (functions/judge): what the user was shown,
    and the passages it was written from. Carries no tenant or groups: the judge scores text, not people."""

    answer_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="the answer's id in its final record")
    question: str = Field(min_length=1, max_length=4000)
    answer: str = Field(max_length=8000, description="the answer as shown, its first 8,000 characters")
    passages: list[SampledPassage] = Field(max_length=12, description="the first passages the model was given")
    model: str = Field(pattern=r"^[\w.:/+-]{1,100}$", description="the model that wrote it; 'extractive' for the "
                       "engine (a metric label, so its characters and length are bounded)")
    provider: Literal["primary", "fallback", "extractive"]
    collection: str = "default"
    prompt_version: str = Field(max_length=20)
    degraded: str | None = Field(None, max_length=200, description="as in the final record")


EVENT_MODELS: dict[str, type[BaseModel]] = {
    DOCUMENT_UPSERTED: DocumentUpserted,
    DOCUMENT_DELETED: DocumentDeleted,
    CHUNKS: ChunkBatch,
    EMBEDDED: EmbeddedBatch,
    DOCUMENT_TOMBSTONED: DocumentTombstoned,
    DOCUMENT_INDEXED: DocumentIndexed,
    DOCUMENT_REMOVED: DocumentRemoved,
    RESYNC_REQUESTED: ResyncRequested,
    ANSWER_SAMPLED: AnswerSampled,
}


SEQUENCE_DIGITS = 32  # the width of a sequence key, in hex digits


def sequence_key(value: int) -> str:
    """Fixed-width hex so that string order is numeric order, whatever the source's counter."""
    return f"{value:0{SEQUENCE_DIGITS}x}"


def schema_file_name(event_type: str) -> str:
    return f"{event_type}.schema.json"


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type, model in EVENT_MODELS.items():
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": event_type,
                  "x-cloudevent-type": event_type, **model.model_json_schema()}
        path = directory / schema_file_name(event_type)
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in export_schemas(Path(__file__).resolve().parents[2] / "eventing" / "schemas"):  # the repo's eventing/
        print(path)
