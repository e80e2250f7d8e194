"""Documents uploaded through the ask gateway: store, queue for ingestion, report progress; and "who am I"."""

from __future__ import annotations

import json
import mimetypes
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import PurePosixPath
from typing import Literal, Protocol
from urllib.parse import quote, unquote

from ragfn.core.auth import Identity, authorize
from ragfn.core.errors import (
    BadEvent,
    ConfigError,
    ObjectNotFound,
    ObjectTooLarge,
    RagfnError,
    Unavailable,
    UnsupportedContent,
)
from ragfn.core.uris import canonical_uri, check_key
from ragfn.eventing import events
from ragfn.eventing.dead_letters import AllDeadLetters, DeadLetter, open_dead_letters
from ragfn.eventing.publish import HttpPublisher, OutboundEvent
from ragfn.ingest.object_writer import ObjectWriter
from ragfn.ingest.objects import ObjectHead
from ragfn.ingest.pipeline import IngestServices
from ragfn.store.base import check_collection_name

State = Literal["queued", "indexing", "indexed", "replaced", "failed"]
# Letters are dated by the broker's (or Redis's) clock, objects by the object store's: allow for them to disagree.
CLOCK_SKEW = timedelta(minutes=10)
MAX_NAME_BYTES = 200  # leaves room under NAME_MAX (255) for the writer's hidden temporary name
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Upload:
    filename: str  # as the client sent it; made safe by Uploads
    data: bytes
    collection: str = "default"
    groups: tuple[str, ...] = ()  # who may read it; () means the whole tenant


@dataclass(frozen=True)
class UploadReceipt:
    document_id: str
    version: str
    collection: str
    event_id: str
    bytes: int
    state: State = "queued"


@dataclass(frozen=True)
class StatusQuery:
    document_id: str
    version: str
    collection: str = "default"
    event_id: str | None = None  # the receipt's event_id: ties a dead-lettered document.upserted to this upload


@dataclass(frozen=True)
class UploadStatus:
    document_id: str
    version: str
    collection: str
    state: State
    chunks_written: int = 0
    chunks: int | None = None  # known once indexed
    error: str | None = None


def safe_filename(name: str) -> str:
    """The last path segment, without control characters or leading dots, short enough for any file system."""
    base = _UNSAFE_NAME.sub("_", re.split(r"[\\/]", name or "")[-1]).strip().lstrip(".").strip()
    if len(base.encode()) > MAX_NAME_BYTES:
        suffix = PurePosixPath(base).suffix[:16]
        base = base.encode()[:MAX_NAME_BYTES - len(suffix.encode())].decode(errors="ignore") + suffix
    if not base:
        raise BadEvent(f"the file name {name!r} has nothing usable in it",
                       hint="upload a file with a name like notes.md")
    return check_key(base, "file name")


def split_groups(raw: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(g.strip() for g in (raw or "").split(",") if g.strip()))


class UploadServices(IngestServices, Protocol):
    """The clients uploads use: ingestion's, and Redis (None without it) for the dead letters."""

    @property
    def redis(self): ...


class Uploads:
    """The logic behind /v1/me, /v1/documents and /v1/documents/status; clients come from the runtime."""

    def __init__(self, runtime: UploadServices) -> None:
        self.runtime = runtime
        self._publisher: HttpPublisher | None = None
        self._writer: ObjectWriter | None = None
        self._hashes: dict[tuple[str, int | None, int], str] = {}  # (uri, mtime, size) -> content version
        self._dead_letters: AllDeadLetters | None = None

    # -- who am I ------------------------------------------------------------------------------------------

    def me(self, identity: Identity) -> dict:
        """The caller and, per collection, how many of their tenant's documents (and chunks) are indexed."""
        index = self.runtime.index

        def tally() -> dict[str, dict[str, int]]:
            counts = {}
            for name in index.collections():
                mine = [e for e in index.ledger(name) if e.state == "indexed" and (e.tenant or "") == identity.tenant]
                if mine:  # collections where the caller has nothing are not named at all
                    counts[name] = {"documents": len(mine), "chunks": sum(e.chunks for e in mine)}
            return counts

        collections = self._guard(tally)
        return {"subject": identity.subject, "tenant": identity.tenant, "groups": list(identity.groups),
                "collections": collections}

    # -- upload --------------------------------------------------------------------------------------------

    def prefix(self, tenant: str, collection: str) -> str:
        """Where a tenant's uploads to a collection live: <upload uri>/tenants/<tenant>/<collection>/."""
        if tenant and (tenant in (".", "..") or re.search(r"[/\\\x00-\x1f]", tenant)):
            raise ConfigError(f"tenant {tenant!r} cannot name an upload folder",
                              hint="use tenant names without '/', '\\' or control characters")
        part = f"tenants/{tenant}" if tenant else "shared"  # "": the untenanted space of a single-tenant install
        return f"{self.runtime.settings.resolved_upload_uri()}{part}/{check_collection_name(collection)}/"

    @staticmethod
    def scope(groups: tuple[str, ...]) -> str:
        """The folder of an upload readable by these groups: `all/` for the whole tenant, `groups/<g>+<h>/` else.

        An upload replaces only the one of the same name in the same scope, which its uploader could read: a
        tenant-wide upload named like an HR-only document is another object, never a way to make it readable."""
        if not groups:
            return "all/"
        return "groups/" + "+".join(quote(g, safe="") for g in sorted(set(groups))) + "/"

    @staticmethod
    def readable(identity: Identity, scoped: str) -> bool:
        """Whether the caller may see an upload at `scoped` (its path under the tenant's collection folder)."""
        parts = scoped.split("/")
        if len(parts) == 2 and parts[0] == "all":
            return bool(parts[1])
        if len(parts) == 3 and parts[0] == "groups" and parts[2]:
            return not {unquote(g) for g in parts[1].split("+")}.isdisjoint(identity.groups)
        return False

    def upload(self, identity: Identity, upload: Upload) -> UploadReceipt:
        """Store the file under the caller's prefix and its readers' scope (replacing one of the same name
        there), then queue it."""
        from ragfn.ingest.pipeline import content_version
        from ragfn.ingest.walk import INGESTIBLE_SUFFIXES

        check_collection_name(upload.collection)
        name = safe_filename(upload.filename)
        if PurePosixPath(name).suffix.lower() not in INGESTIBLE_SUFFIXES:
            raise UnsupportedContent(f"{name!r} is not a supported document type",
                                     hint=f"upload one of: {', '.join(sorted(INGESTIBLE_SUFFIXES))}")
        if not upload.data:
            raise UnsupportedContent(f"{name!r} is empty")
        limit = self.runtime.settings.max_object_bytes
        if len(upload.data) > limit:
            raise ObjectTooLarge(f"{name!r} is larger than the limit of {limit} bytes",
                                 hint="split the document, or raise RAGFN_MAX_OBJECT_BYTES on the gateway and chunk")
        groups = authorize(identity, groups=upload.groups).groups if upload.groups else ()
        uri = self.prefix(identity.tenant, upload.collection) + self.scope(groups) + name
        publisher = self.publisher()  # before writing: a file nobody will ingest helps no one
        metadata = {"ragfn-tenant": identity.tenant, "ragfn-groups": ",".join(groups),
                    "ragfn-collection": upload.collection}
        if self._writer is None:
            self._writer = ObjectWriter(self.runtime.reader)
        written = self._writer.write(uri, upload.data, content_type=mimetypes.guess_type(name)[0],
                                     metadata={k: v for k, v in metadata.items() if v})
        version = written.version or content_version(upload.data)  # what the chunk stage will derive
        # No version in the event: chunk reads the object and takes its version, as it would for a bucket event.
        event = OutboundEvent(events.DOCUMENT_UPSERTED, events.DocumentUpserted(
            uri=written.uri, collection=upload.collection, tenant=identity.tenant or None, groups=list(groups)),
            key=f"{written.uri}@{time.time_ns()}", subject=written.uri)
        publisher.publish([event])
        return UploadReceipt(written.uri, version, upload.collection, event.to_cloudevent()["id"], len(upload.data))

    def publisher(self) -> HttpPublisher:
        if self._publisher is None:
            try:
                self._publisher = HttpPublisher.from_settings(self.runtime.settings)
            except ConfigError as exc:
                raise Unavailable("uploads cannot be queued: this gateway has no event sink",
                                  hint="set K_SINK / RAGFN_SINK to the broker URL") from exc
        return self._publisher

    # -- progress ------------------------------------------------------------------------------------------

    def status(self, identity: Identity, query: StatusQuery) -> UploadStatus:
        uri, collection, version = canonical_uri(query.document_id), query.collection, query.version
        prefix = self.prefix(identity.tenant, collection)
        # never say whether another tenant's upload exists, or one of the tenant's the caller cannot read
        if not uri.startswith(prefix) or not self.readable(identity, uri[len(prefix):]):
            raise ObjectNotFound(f"no upload {uri} of yours in collection {collection!r}",
                                 hint="use the document_id and collection that POST /v1/documents returned")

        def answer(state: State, **extra) -> UploadStatus:
            return UploadStatus(uri, version, collection, state, **extra)

        index = self.runtime.index
        entry = self._guard(lambda: index.ledger_entry(collection, uri) if index.exists(collection) else None)
        if entry and entry.state == "indexed" and entry.version == version:
            return answer("indexed", chunks_written=entry.chunks, chunks=entry.chunks)
        head = self._current(uri)
        if head is None or head.version != version:  # uploaded again since, or deleted
            if head is None and entry is None:
                raise ObjectNotFound(f"{uri} does not exist", hint="upload it again")
            return answer("replaced")
        # Deleted after it was written (a prune, a document.deleted); a different version indexed meanwhile cannot
        # be newer while the object still holds this one, and S3's LastModified (whole seconds) is too coarse to
        # order it against the index's event-time sequence.
        if entry and entry.state == "deleted" and head.sequence is not None \
                and entry.is_newer_than(events.sequence_key(head.sequence), version):
            return answer("replaced")
        letter = self._dead_letter(uri, query, head)
        if letter is not None:
            return answer("failed", error=_reason(letter))
        written = self._guard(lambda: index.version_rows(collection, uri, version, identity.tenant or None))
        return answer("indexing", chunks_written=written) if written else answer("queued")

    def _current(self, uri: str) -> ObjectHead | None:
        """What the object holds now, with the version the index would give it; None when it is gone."""
        from ragfn.ingest.pipeline import content_version

        reader = self.runtime.reader
        try:
            head = reader.head(uri)
            if head.version is not None:
                return head
            key = (uri, head.sequence, head.size)  # file://: hash once per (mtime, size), not on every poll
            if key not in self._hashes:
                if len(self._hashes) > 1024:
                    self._hashes.clear()
                self._hashes[key] = content_version(reader.read(uri).data)
            return ObjectHead(uri, self._hashes[key], head.sequence, head.size)
        except ObjectNotFound:
            return None

    def _dead_letter(self, uri: str, query: StatusQuery, head: ObjectHead) -> DeadLetter | None:
        """The newest dead letter for this upload: from `ragfn dev`'s broker (files under RAGFN_HOME) or, in a
        cluster, from the ragfn-dead-letter function (the Redis stream when RAGFN_REDIS_URL is set)."""
        stored_at = datetime.fromtimestamp((head.sequence or 0) / 1e6, timezone.utc).replace(microsecond=0)
        found = None
        for letter in self._letters(stored_at - CLOCK_SKEW if head.sequence else None):
            event, data = letter.event, letter.event.get("data")
            if not isinstance(data, dict):
                continue
            if event.get("type") == events.DOCUMENT_UPSERTED and _same(data.get("uri"), uri) \
                    and data.get("collection", "default") == query.collection:
                if data.get("version"):
                    mine = data["version"] == query.version
                elif query.event_id:
                    mine = event.get("id") == query.event_id
                else:  # no event id to go by: a letter from after the object was written
                    mine = datetime.fromisoformat(letter.failed_at) >= stored_at
            else:
                document = data.get("document")
                mine = event.get("type") in (events.CHUNKS, events.EMBEDDED) and isinstance(document, dict) \
                    and document.get("document_id") == uri and document.get("version") == query.version \
                    and document.get("collection", "default") == query.collection
            found = letter if mine else found  # letters come oldest first
        return found

    def _letters(self, since: datetime | None) -> list[DeadLetter]:
        """Letters since `since`, oldest first: while Redis is down, the status says what the files and the index
        know rather than failing."""
        if self._dead_letters is None:
            self._dead_letters = open_dead_letters(self.runtime.settings, self.runtime.redis)
        return self._dead_letters.list(since, skip_unavailable=True)

    @staticmethod
    def _guard(call):
        try:
            return call()
        except RagfnError:
            raise
        except Exception as exc:  # chromadb raises its own and httpx's errors when the server is away
            raise Unavailable(f"the vector store is unavailable: {type(exc).__name__}: {exc}") from exc


def _same(candidate: object, uri: str) -> bool:
    try:
        return isinstance(candidate, str) and canonical_uri(candidate) == uri
    except BadEvent:
        return False


def _reason(letter: DeadLetter) -> str:
    """The failing function's message (and hint) when it answered with ragfn's JSON error, else its raw reply."""
    try:
        body = json.loads(letter.error)
        return f"{body['message']} ({body['hint']})" if body.get("hint") else str(body["message"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return letter.error or f"delivery failed with status {letter.status}"

