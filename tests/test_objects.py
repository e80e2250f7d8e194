"""The URI layer: file:// against real folders, s3:// against a real moto server, gs:// without its extra."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import moto_s3

from ragfn.core.config import Settings
from ragfn.core.errors import (
    BadEvent,
    ConfigError,
    ObjectNotFound,
    ObjectTooLarge,
    Unavailable,
    UnsafeKey,
    UnsupportedContent,
)
from ragfn.core.uris import canonical_uri, parse_uri, to_uri
from ragfn.ingest.objects import ObjectReader, StoredObject, metadata_labels, user_metadata


def settings(**kwargs: object) -> Settings:
    return Settings(**kwargs)  # type: ignore[arg-type]


# --- URIs ----------------------------------------------------------------------------------------------------------

@pytest.mark.unit
def test_parse_and_canonical_uris() -> None:
    assert parse_uri("s3://bucket/a/b c?.txt") == ("s3", "bucket", "a/b c?.txt")
    assert parse_uri("GS://bucket/k#1") == ("gs", "bucket", "k#1")
    assert parse_uri("file:///srv/docs/a.md") == ("file", "", "/srv/docs/a.md")
    assert parse_uri("s3://bucket", root=True) == ("s3", "bucket", "")
    assert canonical_uri("S3://bucket/key%20name") == "s3://bucket/key%20name"  # keys are raw, never decoded


@pytest.mark.unit
def test_to_uri_makes_local_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert to_uri("docs/a.md") == f"file://{tmp_path}/docs/a.md"
    assert to_uri("docs/../b.md") == f"file://{tmp_path}/b.md"  # a local path from a user, resolved lexically
    assert to_uri("s3://b/k") == "s3://b/k"


@pytest.mark.unit
@pytest.mark.parametrize(("uri", "error"), [
    ("ftp://host/a", BadEvent), ("http://host/a", BadEvent), ("just/a/path", BadEvent), ("s3://bucket", BadEvent),
    ("s3://b/../k", UnsafeKey), ("s3://b//k", UnsafeKey), ("gs://b/a\x00", UnsafeKey),
    ("file:///srv/../etc/passwd", UnsafeKey), ("file://relative", BadEvent)])
def test_bad_uris(uri: str, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        ObjectReader(settings()).read(uri)
    if "://" in uri and uri.split("://")[0] in ("ftp", "http"):
        assert "file://, s3://, gs://" in str(info.value)


@pytest.mark.unit
def test_metadata_normalisation() -> None:
    meta = user_metadata({"X-Amz-Meta-Ragfn-Tenant": "acme", "ragfn-groups": "a, b,,a", "Ragfn-Collection": "hr"})
    assert meta == {"ragfn-tenant": "acme", "ragfn-groups": "a, b,,a", "ragfn-collection": "hr"}
    assert metadata_labels(meta) == ("acme", ("a", "b"), "hr")
    assert metadata_labels({}) == (None, (), None)


# --- file:// --------------------------------------------------------------------------------------------------------

@pytest.fixture()
def root(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("alpha")
    (docs / "sub" / "b.md").write_text("# beta")
    (docs / ".git").mkdir()
    (docs / ".git" / "HEAD").write_text("ref")
    (docs / ".hidden").write_text("x")
    (tmp_path / "outside.txt").write_text("secret")
    return docs


@pytest.mark.unit
def test_read_file_inside_root(root: Path) -> None:
    obj = ObjectReader(settings(file_roots=[root])).read(to_uri(str(root / "a.txt")))
    assert obj == StoredObject(uri=f"file://{root}/a.txt", data=b"alpha", version=None,
                               sequence=(root / "a.txt").stat().st_mtime_ns // 1000, size=5, content_type="text/plain",
                               metadata={})


@pytest.mark.unit
def test_read_file_outside_roots(root: Path) -> None:
    reader = ObjectReader(settings(file_roots=[root]))
    with pytest.raises(UnsafeKey) as info:
        reader.read(f"file://{root.parent}/outside.txt")
    assert str(root) in info.value.message and "RAGFN_FILE_ROOTS" in str(info.value)


@pytest.mark.unit
def test_symlink_escaping_a_root_is_refused(root: Path) -> None:
    (root / "link.txt").symlink_to(root.parent / "outside.txt")
    (root / "linkdir").symlink_to(root.parent)
    reader = ObjectReader(settings(file_roots=[root]))
    for uri in (f"file://{root}/link.txt", f"file://{root}/linkdir/outside.txt"):
        with pytest.raises(UnsafeKey):
            reader.read(uri)
    (root / "inner.txt").symlink_to(root / "a.txt")  # a link that stays inside is fine
    assert reader.read(f"file://{root}/inner.txt").data == b"alpha"


@pytest.mark.unit
def test_file_too_large_missing_or_not_a_file(root: Path) -> None:
    (root / "big.txt").write_bytes(b"x" * 2048)
    reader = ObjectReader(settings(file_roots=[root], max_object_bytes=1024))
    with pytest.raises(ObjectTooLarge) as info:
        reader.read(f"file://{root}/big.txt")
    assert "2048" in info.value.message and "1024" in info.value.message and "RAGFN_MAX_OBJECT_BYTES" in str(info.value)
    with pytest.raises(ObjectNotFound):
        reader.read(f"file://{root}/nope.txt")
    with pytest.raises(UnsupportedContent):
        reader.read(f"file://{root}/sub")
    os.mkfifo(root / "pipe")
    with pytest.raises(UnsupportedContent):  # must not block on open()
        reader.read(f"file://{root}/pipe")


@pytest.mark.unit
def test_list_files_recursive_skips_hidden_and_escaping_links(root: Path) -> None:
    (root / "link.txt").symlink_to(root.parent / "outside.txt")
    (root / "linkdir").symlink_to(root.parent)
    reader = ObjectReader(settings(file_roots=[root]))
    assert list(reader.list(f"file://{root}")) == [f"file://{root}/a.txt", f"file://{root}/sub/b.md"]
    assert list(reader.list(f"file://{root}/a.txt")) == [f"file://{root}/a.txt"]
    with pytest.raises(UnsafeKey):
        reader.list(f"file://{root.parent}")
    with pytest.raises(ObjectNotFound):
        reader.list(f"file://{root}/missing")


@pytest.mark.unit
def test_gs_without_the_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail exactly as it does where the extra is not installed.
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
    if "google.cloud" in sys.modules:  # an earlier test may have imported it as an attribute of the package
        monkeypatch.delattr(sys.modules["google.cloud"], "storage", raising=False)
    with pytest.raises(ConfigError, match=r"ragfn\[gcs\]"):
        ObjectReader(settings()).read("gs://bucket/key.txt")


@pytest.mark.integration
def test_gs_against_a_local_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs where the gcs extra and gcp-storage-emulator are installed; skipped otherwise."""
    pytest.importorskip("google.cloud.storage")
    server_module = pytest.importorskip("gcp_storage_emulator.server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = server_module.create_server("127.0.0.1", port, in_memory=True, default_bucket="docs")
    server.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")  # the client then needs no credentials
        reader = ObjectReader(settings(max_object_bytes=1024))
        bucket = reader._gcs_client().bucket("docs")
        blob = bucket.blob("handbook/a b.md")
        blob.metadata = {"Ragfn-Tenant": "acme"}
        blob.upload_from_string(b"# hi", content_type="text/markdown")
        bucket.blob("big.bin").upload_from_string(b"x" * 4096)
        obj = reader.read("gs://docs/handbook/a b.md")
        assert (obj.data, obj.content_type, obj.metadata) == (b"# hi", "text/markdown", {"ragfn-tenant": "acme"})
        assert obj.version == str(obj.sequence) and obj.sequence
        assert list(reader.list("gs://docs/handbook/")) == ["gs://docs/handbook/a b.md"]
        with pytest.raises(ObjectTooLarge):
            reader.read("gs://docs/big.bin")
        with pytest.raises(ObjectNotFound):
            reader.read("gs://docs/missing.txt")
    finally:
        server.stop()


# --- s3:// against a real moto server --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    import boto3

    with moto_s3() as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="docs")
        client.put_object(Bucket="docs", Key="handbook/a b.md", Body=b"# Handbook", ContentType="text/markdown",
                          Metadata={"ragfn-tenant": "acme", "Ragfn-Groups": "eng,hr"})
        client.put_object(Bucket="docs", Key="handbook/sub/c.txt", Body=b"c")
        client.put_object(Bucket="docs", Key="handbook/folder/", Body=b"")
        client.put_object(Bucket="docs", Key="handbook/../evil.txt", Body=b"evil")
        client.put_object(Bucket="docs", Key="other/d.txt", Body=b"d")
        client.put_object(Bucket="docs", Key="big.bin", Body=b"x" * 4096)
        yield endpoint


@pytest.mark.integration
def test_s3_read(s3_endpoint: str) -> None:
    obj = ObjectReader(settings(s3_endpoint_url=s3_endpoint)).read("s3://docs/handbook/a b.md")
    assert (obj.uri, obj.data, obj.size, obj.content_type, obj.sequence) == (
        "s3://docs/handbook/a b.md", b"# Handbook", 10, "text/markdown", None)
    assert obj.version and '"' not in obj.version
    assert obj.metadata == {"ragfn-tenant": "acme", "ragfn-groups": "eng,hr"}
    assert metadata_labels(obj.metadata) == ("acme", ("eng", "hr"), None)


@pytest.mark.integration
def test_s3_versioned_bucket_reports_version_id(s3_endpoint: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="versioned")
    client.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    first = client.put_object(Bucket="versioned", Key="k.txt", Body=b"one")["VersionId"]
    second = client.put_object(Bucket="versioned", Key="k.txt", Body=b"two")["VersionId"]
    obj = ObjectReader(settings(s3_endpoint_url=s3_endpoint)).read("s3://versioned/k.txt")
    assert (obj.data, obj.version) == (b"two", second) and first != second


@pytest.mark.integration
def test_s3_list(s3_endpoint: str) -> None:
    reader = ObjectReader(settings(s3_endpoint_url=s3_endpoint))
    assert sorted(reader.list("s3://docs/handbook/")) == ["s3://docs/handbook/a b.md", "s3://docs/handbook/sub/c.txt"]
    assert len(list(reader.list("s3://docs"))) == 4
    with pytest.raises(ObjectNotFound):
        list(reader.list("s3://no-such-bucket/"))


@pytest.mark.integration
def test_s3_size_limit_is_checked_before_download(s3_endpoint: str) -> None:
    reader = ObjectReader(settings(s3_endpoint_url=s3_endpoint, max_object_bytes=1024))
    with pytest.raises(ObjectTooLarge, match="4096"):
        reader.read("s3://docs/big.bin")


@pytest.mark.integration
def test_s3_missing_key_and_bucket(s3_endpoint: str) -> None:
    reader = ObjectReader(settings(s3_endpoint_url=s3_endpoint))
    for uri in ("s3://docs/nope.txt", "s3://no-such-bucket/a.txt"):
        with pytest.raises(ObjectNotFound) as info:
            reader.read(uri)
        assert info.value.status == 404 and info.value.retryable


@pytest.mark.integration
def test_s3_client_is_created_once(s3_endpoint: str) -> None:
    reader = ObjectReader(settings(s3_endpoint_url=s3_endpoint))
    reader.read("s3://docs/other/d.txt")
    client = reader._s3
    reader.read("s3://docs/other/d.txt")
    assert reader._s3 is client is not None


@pytest.mark.integration
def test_s3_unreachable_is_retryable(s3_endpoint: str) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    reader = ObjectReader(settings(s3_endpoint_url=f"http://127.0.0.1:{port}"))
    with pytest.raises(Unavailable) as info:
        reader.read("s3://docs/other/d.txt")
    assert info.value.status == 503 and info.value.retryable
