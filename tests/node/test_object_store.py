"""The object stores (kvstore.node.archive) against a directory, moto's S3 server and SeaweedFS:
create-only writes, SHA-256 checked on every download, multipart uploads, list and delete."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.node.archive.s3 import MIN_PART_BYTES, S3Store
from kvstore.node.archive.store import (
    ArchiveError,
    IntegrityError,
    ObjectExists,
    ObjectMissing,
    ObjectStore,
    open_store,
)
from support.s3server import S3Server, moto_server, seaweedfs


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(params=["file", "moto", "seaweedfs"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _server(request: pytest.FixtureRequest, kind: str) -> S3Server:
    return request.getfixturevalue("moto" if kind == "moto" else "weed")


@pytest.fixture
def store(request: pytest.FixtureRequest, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ObjectStore:
    if kind == "file":
        return open_store(f"file://{tmp_path}/store")
    server = _server(request, kind)
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    return open_store(f"s3://{server.bucket}/{request.node.name.replace('[', '-').rstrip(']')}")


def _corrupt(request: pytest.FixtureRequest, kind: str, store: ObjectStore, name: str) -> None:
    """Flip one byte of the stored object, keeping the digest recorded for it."""
    if kind == "file":
        path = Path(store.url.removeprefix("file://")) / name
        data = bytearray(path.read_bytes())
        data[0] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    assert isinstance(store, S3Store)
    client = _server(request, kind).client()
    key = f"{store.prefix}/{name}"
    original = client.get_object(Bucket=store.bucket, Key=key)
    data = bytearray(original["Body"].read())
    data[0] ^= 0xFF
    client.put_object(Bucket=store.bucket, Key=key, Body=bytes(data), Metadata=original["Metadata"])


def test_put_then_get_returns_the_bytes_and_their_sha256(store: ObjectStore, tmp_path: Path) -> None:
    data = b"snapshot bytes" * 1000
    digest = store.put("a/b/object", data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.get("a/b/object", tmp_path / "out") == digest
    assert (tmp_path / "out").read_bytes() == data
    assert store.read("a/b/object") == data


def test_a_second_put_of_a_name_is_refused_and_the_first_object_stays(store: ObjectStore) -> None:
    store.put("once", b"first")
    with pytest.raises(ObjectExists, match="already exists; objects are never overwritten"):
        store.put("once", b"second")
    assert store.read("once") == b"first"


def test_a_flipped_byte_is_refused_on_download(
    request: pytest.FixtureRequest, kind: str, store: ObjectStore, tmp_path: Path
) -> None:
    store.put("damaged", b"x" * 4096)
    _corrupt(request, kind, store, "damaged")
    with pytest.raises(IntegrityError, match="SHA-256 is .* recorded"):
        store.get("damaged", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    with pytest.raises(IntegrityError):
        store.read("damaged")


def test_list_and_delete(store: ObjectStore) -> None:
    store.put("dir/one", b"1")
    store.put("dir/two", b"22")
    store.put("other", b"333")
    assert [(o.name, o.size) for o in store.list("dir/")] == [("dir/one", 1), ("dir/two", 2)]
    store.delete("dir/one")
    assert [o.name for o in store.list()] == ["dir/two", "other"]
    with pytest.raises(ObjectMissing, match="does not exist"):
        store.delete("dir/one")
    with pytest.raises(ObjectMissing, match="does not exist"):
        store.read("dir/one")


@pytest.mark.parametrize("kind", ["moto", "seaweedfs"])
def test_an_object_above_the_part_size_goes_up_in_parts_and_is_still_create_only(
    request: pytest.FixtureRequest, kind: str, store: ObjectStore, tmp_path: Path
) -> None:
    assert isinstance(store, S3Store)
    parted = S3Store(store.bucket, store.prefix, part_bytes=MIN_PART_BYTES)
    data = bytes(range(256)) * ((MIN_PART_BYTES * 2 + 1000) // 256)
    digest = parted.put("big", io.BytesIO(data))
    head = _server(request, kind).client().head_object(Bucket=store.bucket, Key=f"{store.prefix}/big")
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object's ETag counts its parts
    assert parted.get("big", tmp_path / "big") == digest == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "big").read_bytes() == data
    with pytest.raises(ObjectExists):
        parted.put("big", io.BytesIO(b"y" * (MIN_PART_BYTES + 1)))
    assert parted.get("big", tmp_path / "again") == digest


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://example.com/x", "unsupported object store URL"),
        ("/just/a/path", "unsupported object store URL"),
        ("file://host/path", "no host"),
        ("file:///a/../etc", "absolute path without '.' or '..'"),
        ("file:relative", "absolute path"),
        ("s3://", "s3://bucket/optional/prefix"),
        ("s3://bucket/a/../b", "bad object name"),
        ("s3://bucket/p?x=1", "no query"),
    ],
)
def test_bad_urls_are_refused_with_what_to_use(url: str, says: str) -> None:
    with pytest.raises(ArchiveError, match=re.escape(says)):
        open_store(url)


def test_names_cannot_leave_the_store(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    for name in ("../escape", "/abs", "a//b", "a/./b", "x.sha256", ".incoming/x"):
        with pytest.raises(ArchiveError, match="bad object name"):
            store.put(name, b"x")
    assert list(tmp_path.iterdir()) == []


def test_a_directory_it_cannot_write_is_an_archive_error(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the store's directory should be")
    store = open_store(f"file://{tmp_path}/taken")
    with pytest.raises(ArchiveError, match="writing file://.*/taken/x failed"):
        store.put("x", b"data")
