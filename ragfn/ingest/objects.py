"""Reading file://, s3:// and gs:// objects by URI, within size and root limits, and their user metadata."""

from __future__ import annotations

import logging
import mimetypes
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragfn.core.config import Settings
from ragfn.core.errors import (
    BadEvent,
    ConfigError,
    ObjectNotFound,
    ObjectTooLarge,
    RagfnError,
    RateLimited,
    Unavailable,
    UnsafeKey,
    UnsupportedContent,
)
from ragfn.core.uris import make_uri, parse_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredObject:
    uri: str
    data: bytes
    version: str | None  # None: the caller hashes the content
    sequence: int | None  # microseconds for time-based sources (mtime), like GCS generations; None: caller decides
    size: int
    content_type: str | None
    metadata: dict[str, str] = field(default_factory=dict)  # lower-cased user metadata, e.g. {"ragfn-tenant": "acme"}


@dataclass(frozen=True)
class ObjectHead:
    """An object as it is now, without its content: which version the store holds."""

    uri: str
    version: str | None  # as StoredObject.version: None for file://, whose version is the content hash
    sequence: int | None  # microseconds: mtime, GCS generation, S3 LastModified
    size: int


def user_metadata(raw: Mapping[str, object]) -> dict[str, str]:
    """Lower-case keys without the x-amz-meta- prefix: S3, MinIO and GCS spell the same label differently."""
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise BadEvent(f"object metadata must map strings to strings, got {dict(raw)!r:.200}")
    return {str(k).strip().lower().removeprefix("x-amz-meta-"): str(v) for k, v in raw.items()}


def metadata_labels(metadata: Mapping[str, str]) -> tuple[str | None, tuple[str, ...], str | None]:
    """(tenant, groups, collection) from `ragfn-*` user metadata; groups are comma-separated."""
    groups = [g.strip() for g in metadata.get("ragfn-groups", "").split(",")]
    return (metadata.get("ragfn-tenant") or None, tuple(dict.fromkeys(g for g in groups if g)),
            metadata.get("ragfn-collection") or None)


class ObjectReader:
    """Reads objects by URI. Clients are created on first use and reused; boto3 and GCS clients are thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._s3: Any = None
        self._gcs: Any = None

    def read(self, uri: str) -> StoredObject:
        scheme, bucket, key = parse_uri(uri)
        if scheme == "file":
            return self._read_file(key)
        if scheme == "s3":
            return self._read_s3(bucket, key)
        return self._read_gs(bucket, key)

    def head(self, uri: str) -> ObjectHead:
        """Version and size without a download; ObjectNotFound when the object is gone."""
        scheme, bucket, key = parse_uri(uri)
        uri = make_uri(scheme, bucket, key)
        if scheme == "file":
            try:
                info = self._inside_roots(key).stat()
            except FileNotFoundError as exc:
                raise ObjectNotFound(f"{uri} does not exist") from exc
            except OSError as exc:
                raise Unavailable(f"cannot stat {uri}: {exc}") from exc
            return ObjectHead(uri, None, info.st_mtime_ns // 1000, info.st_size)
        if scheme == "s3":
            try:
                head = self._s3_client().head_object(Bucket=bucket, Key=key)
            except _botocore_errors() as exc:
                raise _s3_error(exc, uri) from exc
            modified = head.get("LastModified")
            return ObjectHead(uri, _s3_version(head), int(modified.timestamp() * 1e6) if modified else None,
                              int(head.get("ContentLength", 0)))
        try:
            blob = self._gcs_client().bucket(bucket).get_blob(key)
        except _gcs_errors() as exc:
            raise _gcs_error(exc, uri) from exc
        if blob is None:
            raise ObjectNotFound(f"{uri} does not exist")
        return ObjectHead(uri, str(blob.generation) if blob.generation else None,
                          int(blob.generation) if blob.generation else None, int(blob.size or 0))

    def _check_size(self, size: int, uri: str) -> None:
        if size > self.settings.max_object_bytes:
            raise ObjectTooLarge(f"{uri} is {size} bytes, over the limit of {self.settings.max_object_bytes} bytes",
                                 hint="raise RAGFN_MAX_OBJECT_BYTES to ingest it")

    # --- file:// ---------------------------------------------------------------------------------------------
    def _inside_roots(self, path: str) -> Path:
        resolved = Path(path).resolve()  # resolving first is what stops symlinks and '..' from escaping
        roots = self.settings.resolved_file_roots()
        if not any(resolved.is_relative_to(r) for r in roots):
            raise UnsafeKey(f"{path} is outside the allowed file roots: {', '.join(map(str, roots))}",
                            hint="add its folder to RAGFN_FILE_ROOTS (comma-separated)")
        return resolved

    def _read_file(self, path: str) -> StoredObject:
        uri = make_uri("file", "", path)
        local = self._inside_roots(path)
        limit = self.settings.max_object_bytes
        try:
            info = local.stat()
            # Checked before open(): opening a FIFO or device would block or never end.
            if not stat.S_ISREG(info.st_mode):
                raise UnsupportedContent(f"{uri} is not a regular file")
            self._check_size(info.st_size, uri)
            with local.open("rb") as fh:
                data = fh.read(limit + 1)
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"{uri} does not exist") from exc
        except PermissionError as exc:
            raise ConfigError(f"no permission to read {uri}", hint="check the file's owner and mode") from exc
        except OSError as exc:
            raise Unavailable(f"cannot read {uri}: {exc}") from exc
        self._check_size(len(data), uri)  # the file may have grown since stat()
        return StoredObject(uri, data, None, info.st_mtime_ns // 1000, len(data), mimetypes.guess_type(path)[0], {})

    def _list_files(self, path: str) -> Iterator[str]:
        # Checked here rather than in the generator, so that a bad root fails at the call, not at first next().
        if not self._inside_roots(path).exists():
            raise ObjectNotFound(f"file://{path} does not exist")
        return iter([make_uri("file", "", path)]) if os.path.isfile(path) else self._walk(path)

    def _walk(self, path: str) -> Iterator[str]:
        # Lexical paths, as to_uri() makes them; symlinked folders are not followed (no cycles, no escapes).
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .git, .venv, editor state
            for name in sorted(files):
                full = os.path.join(folder, name)
                if name.startswith(".") or not os.path.isfile(full):
                    continue
                try:
                    self._inside_roots(full)
                    yield make_uri("file", "", full)
                except BadEvent as exc:
                    log.warning("skipping %s: %s", full, exc)

    # --- s3:// -----------------------------------------------------------------------------------------------
    def _s3_client(self) -> Any:
        if self._s3 is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as exc:
                raise ConfigError("s3:// URIs need boto3, which is not installed",
                                  hint="pip install 'ragfn[chunk]'") from exc
            # Path-style addressing: MinIO and moto endpoints have no per-bucket DNS names.
            config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"},
                            s3={"addressing_style": "path"} if self.settings.s3_endpoint_url else None)
            self._s3 = boto3.client("s3", endpoint_url=self.settings.s3_endpoint_url, config=config)
        return self._s3

    def _read_s3(self, bucket: str, key: str) -> StoredObject:
        uri, client = make_uri("s3", bucket, key), self._s3_client()
        errors = _botocore_errors()
        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except errors as exc:
            raise _s3_error(exc, uri) from exc
        self._check_size(int(head.get("ContentLength", 0)), uri)
        etag = str(head.get("ETag", ""))
        version_id = head.get("VersionId") if head.get("VersionId") not in (None, "null") else None
        # IfMatch pins the download to the version head() saw, so size check, data and version agree.
        extra = {"VersionId": version_id} if version_id else {"IfMatch": etag} if etag else {}
        try:
            body = client.get_object(Bucket=bucket, Key=key, **extra)["Body"]
            try:
                data = body.read(self.settings.max_object_bytes + 1)
            finally:
                body.close()
        except errors as exc:
            raise _s3_error(exc, uri) from exc
        self._check_size(len(data), uri)
        # The same preference as S3 notifications (versionId, then eTag), so event and read agree on the version.
        return StoredObject(uri, data, _s3_version(head), None, len(data),
                            head.get("ContentType"), user_metadata(head.get("Metadata") or {}))

    def _list_s3(self, bucket: str, prefix: str) -> Iterator[str]:
        try:
            for page in self._s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield from _listed("s3", bucket, item["Key"])
        except _botocore_errors() as exc:
            raise _s3_error(exc, f"s3://{bucket}/{prefix}") from exc

    # --- gs:// -----------------------------------------------------------------------------------------------
    def _gcs_client(self) -> Any:
        if self._gcs is None:
            try:
                from google.auth.exceptions import GoogleAuthError
                from google.cloud import storage
            except ImportError as exc:
                raise ConfigError("gs:// URIs need google-cloud-storage, which is not installed",
                                  hint="pip install 'ragfn[gcs]'") from exc
            try:
                self._gcs = storage.Client()
            except GoogleAuthError as exc:
                raise ConfigError(f"no Google Cloud credentials: {exc}",
                                  hint="set GOOGLE_APPLICATION_CREDENTIALS, or run on GCP") from exc
        return self._gcs

    def _read_gs(self, bucket: str, key: str) -> StoredObject:
        uri, client = make_uri("gs", bucket, key), self._gcs_client()
        try:
            blob = client.bucket(bucket).get_blob(key)
            if blob is None:
                raise ObjectNotFound(f"{uri} does not exist")
            self._check_size(int(blob.size or 0), uri)
            generation = int(blob.generation) if blob.generation else None  # always set by GCS, not by every emulator
            data = blob.download_as_bytes(if_generation_match=generation)  # the generation whose size was checked
        except _gcs_errors() as exc:
            raise _gcs_error(exc, uri) from exc
        self._check_size(len(data), uri)
        return StoredObject(uri, data, None if generation is None else str(generation), generation, len(data),
                            blob.content_type, user_metadata(blob.metadata or {}))

    def _list_gs(self, bucket: str, prefix: str) -> Iterator[str]:
        try:
            for blob in self._gcs_client().list_blobs(bucket, prefix=prefix or None):
                yield from _listed("gs", bucket, blob.name)
        except _gcs_errors() as exc:
            raise _gcs_error(exc, f"gs://{bucket}/{prefix}") from exc

    def list(self, root_uri: str) -> Iterator[str]:
        """Every object URI under a folder (file://, recursive) or key prefix (s3://, gs://); no folder markers."""
        scheme, bucket, key = parse_uri(root_uri, root=True)
        if scheme == "file":
            return self._list_files(key)
        return self._list_s3(bucket, key) if scheme == "s3" else self._list_gs(bucket, key)


def _s3_version(response: Mapping[str, Any]) -> str | None:
    """The reader's preference (versionId, then eTag), from a head_object or put_object response."""
    version_id = response.get("VersionId")
    if version_id not in (None, "null"):
        return str(version_id)
    return str(response.get("ETag", "")).strip('"') or None


def _listed(scheme: str, bucket: str, key: str) -> Iterator[str]:
    if key.endswith("/"):  # zero-byte "folder" objects made by web consoles
        return
    try:
        yield make_uri(scheme, bucket, key)
    except BadEvent as exc:
        log.warning("skipping %s://%s/%s: %s", scheme, bucket, key, exc)


def _botocore_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError
    return (BotoCoreError, ClientError)


def _s3_error(exc: Exception, uri: str, *, writing: bool = False) -> RagfnError:
    from botocore.exceptions import ClientError, NoCredentialsError
    if isinstance(exc, NoCredentialsError):
        return ConfigError(f"no AWS credentials to {'write' if writing else 'read'} {uri}",
                           hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if not isinstance(exc, ClientError):
        return Unavailable(f"S3 is unreachable for {uri}: {exc}")
    return _by_status(int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)), uri, "S3", exc,
                      writing=writing)


def _gcs_errors() -> tuple[type[Exception], ...]:
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError
    return (GoogleAPIError, GoogleAuthError, OSError)  # requests' connection errors are OSErrors


def _gcs_error(exc: Exception, uri: str, *, writing: bool = False) -> RagfnError:
    code = getattr(exc, "code", None)  # GoogleAPICallError carries the HTTP status; transport errors do not
    return _by_status(code if isinstance(code, int) else 0, uri, "Cloud Storage", exc, writing=writing)


def _by_status(status: int, uri: str, service: str, exc: Exception, *, writing: bool = False) -> RagfnError:
    """One mapping from an object store's HTTP status to ragfn's error tree (and so to Knative's retries)."""
    if status == 404:
        return ObjectNotFound(f"{uri} does not exist")
    if status in (401, 403):
        return ConfigError(f"{service} denied access to {uri}: {exc}",
                           hint="check the credentials and the bucket's policy (S3 answers 403 for a missing key "
                                "when the reader lacks s3:ListBucket)")
    if status == 412:  # If-Match / if_generation_match: overwritten between the size check and the download
        return Unavailable(f"{uri} changed while it was being read")
    if status == 429:
        return RateLimited(f"{service} is throttling {'writes to' if writing else 'reads of'} {uri}")
    if status >= 500 or status == 0:
        return Unavailable(f"{service} failed {'writing' if writing else 'reading'} {uri}: {exc}")
    return BadEvent(f"{service} refused {uri}: {exc}")
