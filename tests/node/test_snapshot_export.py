"""`kvctl snapshot export --to URL` and `kvctl backup list URL` end to end: a real node uploads to
SeaweedFS (s3://) and to a directory (file://); kvctl lists what is there from its own side."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.node.archive.snapshots import MANIFEST_OBJECT, list_snapshots
from kvstore.node.archive.store import ArchiveError, open_store
from kvstore.node.snapshot import SnapshotReader
from kvstore.node.wal.format import format_lsn
from support.harness import NodeProcess, free_port
from support.kvctl_runner import as_env, fails, fails_json, kvctl, kvctl_json, ok
from support.s3server import S3Server, seaweedfs


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, weed: S3Server) -> Iterator[NodeProcess]:
    # The node reaches the object store with the AWS_* variables of its own environment.
    node = NodeProcess(tmp_path_factory.mktemp("export") / "node", env=weed.env)
    try:
        node.start()
        yield node
    finally:
        node.close()


def _write(node: NodeProcess, prefix: str, count: int) -> None:
    with node.client() as client:
        for index in range(count):
            assert client.put(f"/v1/kv/{prefix}{index}", content=b"v" * 100).status_code in (200, 201)


@pytest.mark.parametrize("target", ["s3", "file"])
def test_export_uploads_snapshot_and_manifest_and_backup_list_shows_them(
    target: str, node: NodeProcess, weed: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{weed.bucket}/export-test" if target == "s3" else f"file://{tmp_path}/backups"
    env = {**as_env(node), **weed.env}  # kvctl reads the store itself for `backup list`
    for name, value in weed.env.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "kvctl.json"
    _write(node, f"{target}/first/", 50)

    first = kvctl_json("snapshot", "export", "--to", url, config=config, env=env)
    manifest = first["manifest"]
    assert first["to"] == url
    assert manifest["format_version"] == 1 and manifest["timeline"] == 1
    assert manifest["snapshot"].startswith("snapshots/00000001-") and manifest["snapshot"].endswith("/snapshot.chk")
    assert manifest["source_file"] == first["checkpoint"]["snapshot"]
    assert manifest["redo_lsn"] == first["checkpoint"]["redo_lsn"]

    # The uploaded object is the snapshot the manifest describes, and holds the keys written.
    store = open_store(url)
    assert store.get(manifest["snapshot"], tmp_path / "downloaded") == manifest["sha256"]
    downloaded = tmp_path / "downloaded"
    assert downloaded.stat().st_size == manifest["bytes"]
    assert hashlib.sha256(downloaded.read_bytes()).hexdigest() == manifest["sha256"]
    reader = SnapshotReader(downloaded)
    assert format_lsn(reader.info.redo_lsn) == manifest["redo_lsn"] and reader.info.timeline == 1
    keys = {key for key, _ in reader.entries()}
    assert {f"{target}/first/{index}" for index in range(50)} <= keys

    # Nothing changed since: the same snapshot, which is never uploaded over.
    again = fails_json(kvctl("snapshot", "export", "--to", url, "--format", "json", config=config, env=env))
    assert again["code"] == "already_exists" and "never overwritten" in again["message"]

    _write(node, f"{target}/second/", 50)
    second = kvctl_json("snapshot", "export", "--to", url, config=config, env=env)["manifest"]
    assert second["snapshot"] != manifest["snapshot"]

    listed = kvctl_json("backup", "list", url, config=config, env=env)["snapshots"]
    assert [item["snapshot"] for item in listed] == [manifest["snapshot"], second["snapshot"]]
    assert listed[0] == manifest
    assert store.get(manifest["snapshot"], tmp_path / "first-again") == manifest["sha256"]
    table = ok(kvctl("backup", "list", url, config=config, env=env)).split("\n\n")[0].splitlines()  # the snapshots
    assert table[0].split() == ["TIMELINE", "REDO_LSN", "CONSISTENT_LSN", "BYTES", "CREATED_AT", "SNAPSHOT"]
    assert [line.split()[1] for line in table[1:]] == [manifest["redo_lsn"], second["redo_lsn"]]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:9/x", "unsupported object store URL"),
        ("file://relative/path", "no host"),
        ("file:///tmp/../etc", "without '.' or '..'"),
        ("s3://", "s3://bucket/optional/prefix"),
    ],
)
def test_export_refuses_other_urls(url: str, says: str, node: NodeProcess, tmp_path: Path) -> None:
    result = kvctl("snapshot", "export", "--to", url, config=tmp_path / "kvctl.json", env=as_env(node))
    assert says in fails(result)


def test_export_body_must_be_just_a_url(node: NodeProcess) -> None:
    with node.client() as client:
        for body in ({}, {"to": 5}, {"to": "file:///x", "extra": 1}, ["file:///x"]):
            answer = client.post("/v1/admin/snapshots/export", json=body)
            assert answer.status_code == 400 and 'the body is {"to": URL}' in answer.json()["error"]["message"]


def test_an_unreachable_object_store_is_a_502_naming_it(tmp_path: Path) -> None:
    node = NodeProcess(
        tmp_path / "node",
        env={
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",  # nothing listens there
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
            "AWS_REGION": "us-east-1",
        },
    )
    try:
        node.start()
        result = kvctl(
            "snapshot", "export", "--to", "s3://nowhere/p", "--format", "json", config=tmp_path / "c", env=as_env(node)
        )
        error = fails_json(result)
        assert error["code"] == "upstream_failed" and "s3://nowhere/p/snapshots/" in error["message"]
    finally:
        node.close()


def test_backup_list_refuses_a_manifest_of_another_format(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    store.put(f"snapshots/00000001-0000000000000010/{MANIFEST_OBJECT}", b'{"format_version": 2}')
    with pytest.raises(ArchiveError, match="manifest format 2, this version reads 1"):
        list_snapshots(store)
    result = kvctl("backup", "list", f"file://{tmp_path}", config=tmp_path / "kvctl.json")
    assert "manifest format 2" in fails(result)
