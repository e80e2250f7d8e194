"""LanceDB's side of the index: the connection from settings, the table schemas and indexes, and the filters
(SQL, as Lance takes them) that order versions and keep tenants apart."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np

from ragfn.core.config import Settings
from ragfn.core.errors import BadEvent, ConfigError, RagfnError, Unavailable
from ragfn.eventing.events import DocumentVersion
from ragfn.store.base import PUBLIC, Caller, Hit, LedgerEntry, row_id

log = logging.getLogger("ragfn.store.lance")
EMBEDDER_KEY = b"ragfn:embedder"

# the metadata columns of a chunk row, returned with every hit in the shape Chroma's metadata has
CHUNK_COLUMNS = ("document_id", "version", "sequence", "number", "start", "end", "heading_path", "content_hash",
                 "tokens", "tenant", "groups", "content_type")
SETTINGS_HINT = ("check RAGFN_LANCEDB_URI (a folder, s3://bucket/prefix or gs://bucket/prefix), the bucket's "
                 "credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION, or "
                 "GOOGLE_APPLICATION_CREDENTIALS) and RAGFN_S3_ENDPOINT_URL for MinIO or another S3-compatible store")


def ledger_schema():
    import pyarrow as pa

    return pa.schema([("document_id", pa.string()), ("version", pa.string()), ("sequence", pa.string()),
                      ("state", pa.string()), ("chunks", pa.int64()), ("tenant", pa.string()),
                      ("chunking", pa.string())])


def chunk_schema(dimensions: int, embedder: str):
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()), ("text", pa.string()), ("vector", pa.list_(pa.float32(), dimensions)),
        ("document_id", pa.string()), ("version", pa.string()), ("sequence", pa.string()), ("number", pa.int64()),
        ("start", pa.int64()), ("end", pa.int64()), ("heading_path", pa.string()), ("content_hash", pa.string()),
        ("tokens", pa.int64()), ("tenant", pa.string()), ("groups", pa.list_(pa.string())),
        ("content_type", pa.string()),
    ], metadata={"ragfn:embedder": embedder})


def storage_options(settings: Settings, uri: str) -> dict[str, str]:
    """Object-store options from the usual variables: lance's object_store reads few of them by itself."""
    options: dict[str, str] = {}
    if uri.startswith("s3://"):
        for option, variable in (("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
                                 ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                                 ("aws_session_token", "AWS_SESSION_TOKEN")):
            if os.environ.get(variable):
                options[option] = os.environ[variable]
        options["aws_region"] = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        if settings.s3_endpoint_url:
            options["aws_endpoint"] = settings.s3_endpoint_url
            options["allow_http"] = str(settings.s3_endpoint_url.startswith("http://")).lower()
    elif uri.startswith("gs://") and os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        options["google_service_account"] = os.environ["GOOGLE_APPLICATION_CREDENTIALS"]
    return options


def connect(settings: Settings):
    try:
        import lancedb
    except ImportError as exc:
        raise ConfigError("RAGFN_STORE=lancedb needs the lancedb package", hint="pip install 'ragfn[lancedb]'") from exc
    uri = settings.resolved_lancedb_uri()
    if "://" not in uri:
        try:
            Path(uri).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"RAGFN_LANCEDB_URI={uri!r} is not a folder ragfn can write: {exc}") from exc
    try:
        return lancedb.connect(uri, storage_options=storage_options(settings, uri),
                               read_consistency_interval=timedelta(seconds=settings.lancedb_refresh_seconds))
    except Exception as exc:  # lancedb raises ValueError/OSError/RuntimeError from its Rust core
        raise ConfigError(f"cannot open LanceDB at RAGFN_LANCEDB_URI={uri!r}: {exc}", hint=SETTINGS_HINT) from exc


@contextmanager
def guarded(what: str, *, setting: bool = False) -> Iterator[None]:
    """A store error as `Unavailable` (503, retried), or as `ConfigError` naming the settings at start-up."""
    try:
        yield
    except RagfnError:
        raise
    except Exception as exc:  # lancedb's errors are ValueError, OSError and RuntimeError from its Rust core
        if setting:
            raise ConfigError(f"{what}: {type(exc).__name__}: {exc}", hint=SETTINGS_HINT) from exc
        raise Unavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


def ensure_indexes(table, *, ledger: bool = False) -> None:
    """The scalar indexes filters and merge_insert's key lookups use, and (on chunk tables) the FTS index lexical
    search needs. Rows written after an index are searched flat until the maintenance function folds them in
    (`optimize`), so new rows are found at once."""
    from lancedb.index import FTS, Bitmap, BTree, LabelList

    wanted = {"document_id": BTree()} if ledger else {
        "text": FTS(with_position=False, language="English", stem=True, remove_stop_words=True, lower_case=True,
                    ascii_folding=True),
        "id": BTree(), "tenant": Bitmap(), "groups": LabelList(), "document_id": BTree(), "content_hash": BTree()}
    present = {column for config in table.list_indices() for column in config.columns}
    for column, config in wanted.items():
        if column in present:
            continue
        try:
            table.create_index(column, config=config, replace=False)
        except Exception as exc:  # another replica created it first (a commit conflict), or it exists now
            if column not in {c for config in table.list_indices() for c in config.columns}:
                raise
            log.debug("index on %s created concurrently: %s", column, exc)


def has_vector_index(table) -> bool:
    return any(config.columns == ["vector"] for config in table.list_indices())


def create_vector_index(table, rows: int) -> None:
    """IVF-HNSW-SQ with cosine distance, about 4,000 rows per partition (lance's own default target is larger;
    smaller partitions keep a prefiltered query's probes cheap for small tenants)."""
    from lancedb.index import HnswSq

    table.create_index("vector", config=HnswSq(distance_type="cosine", num_partitions=max(1, rows // 4096)))


def unindexed_rows(table) -> int:
    """Rows the FTS index does not hold yet (written since the last `optimize`): searched flat, so still found."""
    for config in table.list_indices():
        if config.columns == ["text"]:
            return int(table.index_stats(config.name).num_unindexed_rows)
    return table.count_rows()


def sql(value: str) -> str:
    """A string literal in Lance's SQL filters."""
    if "\x00" in value:
        raise BadEvent("a name or id holds a NUL character", hint="remove control characters")
    return "'" + value.replace("'", "''") + "'"


def is_not_older(target: str, source: str) -> str:
    """merge_insert's condition: the stored row's (sequence, version) is not newer than the incoming one."""
    return (f"{target}.sequence < {source}.sequence OR ({target}.sequence = {source}.sequence"
            f" AND {target}.version <= {source}.version)")


def older_than(sequence: str, version: str) -> str:
    return f"(sequence < {sql(sequence)} OR (sequence = {sql(sequence)} AND version < {sql(version)}))"


def readable_by(caller: Caller) -> str:
    """The caller's filter, applied by Lance before its top-k (prefilter)."""
    groups = ", ".join(sql(group) for group in caller.readable_groups())
    return f"tenant = {sql(caller.tenant or '')} AND array_has_any(groups, [{groups}])"


def maintain_table(table, *, vector_index_rows: int, keep_versions: timedelta) -> dict:
    """One chunk table's maintenance: its indexes brought up to date, a vector index once it holds
    `vector_index_rows`, compaction, and versions older than `keep_versions` removed."""
    started = time.monotonic()
    ensure_indexes(table)
    rows, unindexed = table.count_rows(), unindexed_rows(table)
    created = rows >= vector_index_rows and not has_vector_index(table)
    if created:
        create_vector_index(table, rows)
    indexed, versions = time.monotonic(), len(table.list_versions())
    table.optimize(cleanup_older_than=keep_versions)
    return {"rows": rows, "unindexed_rows": unindexed, "vector_index_created": created,
            "versions_removed": max(versions - len(table.list_versions()), 0),
            "indexes_seconds": indexed - started, "optimize_seconds": time.monotonic() - indexed}


def version_label(doc: DocumentVersion) -> str:
    return (f"document_id = {sql(doc.document_id)} AND version = {sql(doc.version)}"
            f" AND sequence = {sql(doc.sequence)}")


def embedder_of(table) -> str:
    return (table.schema.metadata or {}).get(EMBEDDER_KEY, b"").decode()


def entry_from(row: dict) -> LedgerEntry:
    return LedgerEntry(row["document_id"], row["version"], row["sequence"], row["state"], int(row["chunks"]),
                       row["tenant"] or None, row["chunking"] or "")


def chunk_row(doc: DocumentVersion, chunk, vector: np.ndarray) -> dict:
    return {"id": row_id(doc, chunk), "text": chunk.text, "vector": vector, "document_id": doc.document_id,
            "version": doc.version, "sequence": doc.sequence, "number": chunk.number, "start": chunk.start,
            "end": chunk.end, "heading_path": " > ".join(chunk.heading_path), "content_hash": chunk.content_hash,
            "tokens": chunk.tokens, "tenant": doc.tenant or "", "groups": list(doc.groups) or [PUBLIC],
            "content_type": doc.content_type or ""}


def metadata_of(row: dict) -> dict:
    """The same metadata a Chroma row carries, so everything above the store reads one shape."""
    return {key: row[key] for key in CHUNK_COLUMNS} | {"source": row["document_id"]}


def hit_from(row: dict, score: float) -> Hit:
    return Hit(chunk_id=row["id"], source=row["document_id"], text=row["text"], score=score, metadata=metadata_of(row))

