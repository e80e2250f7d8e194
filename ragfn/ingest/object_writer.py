"""Writing whole objects by URI (the gateway's uploads): file:// atomically, s3:// and gs:// with user metadata."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ragfn.core.errors import ConfigError, Unavailable
from ragfn.core.uris import make_uri, parse_uri
from ragfn.ingest.objects import (
    ObjectHead,
    ObjectReader,
    _botocore_errors,
    _gcs_error,
    _gcs_errors,
    _s3_error,
    _s3_version,
)


class ObjectWriter:
    """Writes whole objects by URI (the gateway's uploads), with the reader's clients and root limits."""

    def __init__(self, reader: ObjectReader) -> None:
        self.reader = reader

    def write(self, uri: str, data: bytes, *, content_type: str | None = None,
              metadata: Mapping[str, str] | None = None) -> ObjectHead:
        """Store `data` at `uri`, replacing what was there. The version is the one ObjectReader.read will report
        (None for file://, which carries no user metadata: the event that follows carries the labels)."""
        scheme, bucket, key = parse_uri(uri)
        uri, meta = make_uri(scheme, bucket, key), dict(metadata or {})
        self.reader._check_size(len(data), uri)
        if scheme == "file":
            return self._write_file(uri, key, data)
        if scheme == "s3":
            extra = {"ContentType": content_type} if content_type else {}
            try:
                put = self.reader._s3_client().put_object(Bucket=bucket, Key=key, Body=data, Metadata=meta, **extra)
            except _botocore_errors() as exc:
                raise _s3_error(exc, uri, writing=True) from exc
            return ObjectHead(uri, _s3_version(put), None, len(data))
        try:
            blob = self.reader._gcs_client().bucket(bucket).blob(key)
            blob.metadata = meta
            blob.upload_from_string(data, content_type=content_type or "application/octet-stream")
        except _gcs_errors() as exc:
            raise _gcs_error(exc, uri, writing=True) from exc
        generation = int(blob.generation) if blob.generation else None
        return ObjectHead(uri, None if generation is None else str(generation), generation, len(data))

    def _write_file(self, uri: str, path: str, data: bytes) -> ObjectHead:
        local = self.reader._inside_roots(path)
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            # A hidden temporary file in the same folder, then a rename: readers see the old or the new
            # content, never half of it, and folder walks skip the dot-file.
            fd, staging = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".tmp", dir=local.parent)
            try:
                os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the file from a chunk function run as another user
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())  # on disk before the event that names it goes out
                os.replace(staging, local)
            except BaseException:
                Path(staging).unlink(missing_ok=True)
                raise
            info = local.stat()
        except PermissionError as exc:
            raise ConfigError(f"no permission to write {uri}", hint="check the upload folder's owner and mode") from exc
        except OSError as exc:  # a full disk, a read-only mount: retrying later may work
            raise Unavailable(f"cannot write {uri}: {exc}") from exc
        return ObjectHead(uri, None, info.st_mtime_ns // 1000, len(data))
