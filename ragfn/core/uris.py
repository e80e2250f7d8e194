"""Canonical file://, s3:// and gs:// URIs: parsing, building, and rejecting keys that could escape a root."""

from __future__ import annotations

import os

from ragfn.core.errors import BadEvent, UnsafeKey

SCHEMES = ("file", "s3", "gs")


def check_key(key: str, what: str = "key") -> str:
    """Reject keys that could escape a root once mapped to a path or re-joined into a URI."""
    if not key:
        raise BadEvent(f"the object {what} is empty")
    if "\x00" in key:
        raise UnsafeKey(f"the object {what} {key!r} contains a NUL byte")
    if ".." in key.replace("\\", "/").split("/"):
        raise UnsafeKey(f"the object {what} {key!r} contains a '..' segment")
    return key


def make_uri(scheme: str, bucket: str, key: str) -> str:
    """The canonical URI. Keys stay raw (not percent-encoded), as `aws s3` and `gsutil` write them."""
    if scheme == "file":
        if not key.startswith("/"):
            raise BadEvent(f"file:// URIs need an absolute path, got {key!r}")
        return "file://" + check_key(key, "path")
    if scheme not in SCHEMES:
        raise BadEvent(f"unsupported URI scheme {scheme!r}; supported: {', '.join(s + '://' for s in SCHEMES)}")
    if not bucket or "/" in bucket or "\x00" in bucket:
        raise BadEvent(f"invalid bucket name {bucket!r}")
    if key.startswith("/"):
        raise UnsafeKey(f"the object key {key!r} starts with '/'")
    return f"{scheme}://{bucket}/{check_key(key)}"


def parse_uri(uri: str, *, root: bool = False) -> tuple[str, str, str]:
    """(scheme, bucket, key); for file:// the bucket is "" and the key the absolute path. `root` allows an empty key."""
    if not isinstance(uri, str) or "://" not in uri:
        raise BadEvent(f"expected a URI like file:///path, s3://bucket/key or gs://bucket/key, got {uri!r}")
    scheme, _, rest = uri.partition("://")  # not urlsplit: '?', '#' and '%' are ordinary characters in keys
    scheme = scheme.lower()
    bucket, _, key = ("", "", rest) if scheme == "file" else rest.partition("/")
    make_uri(scheme, bucket, "x" if root and not key and scheme != "file" else key)  # validates
    return scheme, bucket, key


def document_name(uri: str) -> str:
    """What people call a document: the last part of its URI (`s3://bucket/team/leave.md` -> `leave.md`)."""
    return uri.rstrip("/").rsplit("/", 1)[-1] or uri


def canonical_uri(uri: str) -> str:
    return make_uri(*parse_uri(uri))


def to_uri(path_or_uri: str) -> str:
    """A canonical URI from a URI or a local path (made absolute, symlinks kept, so a deleted file keeps its id)."""
    if "://" in path_or_uri:
        return canonical_uri(path_or_uri)
    return make_uri("file", "", os.path.abspath(os.path.expanduser(path_or_uri)))
