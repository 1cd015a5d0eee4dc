"""Backups end to end against a real S3 server (SeaweedFS), encrypted: a node archives with an
archive key; `kvctl snapshot export`, `backup list`, `backup verify` and `restore` work from kvctl's
side; without the key nothing is restored or verified; a flipped byte in an archived object is
named by verify and refused by restore."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstore.node.archive.layout import parse_segment
from kvstore.node.wal.format import parse_lsn
from support.harness import MakeNode, NodeProcess
from support.kvctl_runner import as_env, fails, kvctl, kvctl_json, ok
from support.s3server import S3Server, SeaweedFS, seaweedfs
from support.waiting import wait_until

ARCHIVE_KEY = "3c" * 32
OTHER_KEY = "c3" * 32


@pytest.fixture(scope="module")
def weed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def _status(node: NodeProcess) -> dict[str, Any]:
    with node.client() as client:
        document: dict[str, Any] = client.get("/v1/status").json()
    return document


def _digest(node: NodeProcess) -> tuple[str, int]:
    with node.client() as client:
        document = client.get("/v1/admin/digest").json()
    return document["digest"], document["keys"]


def test_an_encrypted_archive_on_s3_end_to_end(node_factory: MakeNode, weed: S3Server, tmp_path: Path) -> None:
    url = f"s3://{weed.bucket}/encrypted"
    env = {
        **weed.env,
        "KVSTORE_ARCHIVE_URL": url,
        "KVSTORE_ARCHIVE_KEY": ARCHIVE_KEY,
        "KVSTORE_ARCHIVE_TIMEOUT_S": "1",
        "KVSTORE_WAL_SEGMENT_SIZE_BYTES": "16384",
    }
    node = node_factory(env=env).start()
    config = tmp_path / "kvctl.json"
    with node.client() as client:
        for index in range(200):
            assert client.put(f"/v1/kv/e2e/{index}", content=b"secret-%d" % index).status_code == 201
    exported = kvctl_json("snapshot", "export", "--to", url, config=config, env={**as_env(node), **weed.env})
    assert exported["manifest"]["key_id"] is not None
    with node.client() as client:
        last = client.put("/v1/kv/e2e/last", content=b"after the export").json()["commit_lsn"]
    wait_until(lambda: parse_lsn(_status(node)["archive"]["archived_lsn"] or "0/0") >= parse_lsn(last), 60, "archived")
    digest = _digest(node)
    node.stop()

    keyed = {**weed.env, "KVSTORE_ARCHIVE_KEY": ARCHIVE_KEY}
    listing = kvctl_json("backup", "list", url, config=config, env=weed.env)  # no key needed to list
    assert len(listing["snapshots"]) >= 2 and listing["wal"]["gaps"] == []
    assert "checked: ok" in ok(kvctl("backup", "verify", url, config=config, env=keyed))

    # Without the key, or with another one, nothing is read: the message names the archive's key id.
    key_id = exported["manifest"]["key_id"]
    for env_without in (weed.env, {**weed.env, "KVSTORE_ARCHIVE_KEY": OTHER_KEY}):
        message = fails(kvctl("restore", url, "--data-dir", str(tmp_path / "no-key"), config=config, env=env_without))
        assert key_id in message
        assert not (tmp_path / "no-key").exists()
        assert key_id in fails(kvctl("backup", "verify", url, config=config, env=env_without))

    # With the key, from a key file this time.
    key_file = tmp_path / "archive.key"
    key_file.write_text(ARCHIVE_KEY + "\n")
    key_file.chmod(0o600)
    restored = tmp_path / "restored"
    ok(kvctl("restore", url, "--data-dir", str(restored), "--key-file", str(key_file), config=config, env=weed.env))
    copy = node_factory("restored")
    copy.data_dir = restored
    copy.start()
    assert _digest(copy) == digest
    copy.stop()

    # A flipped byte in an archived WAL segment: verify names it, restore refuses to use it.
    s3 = weed.client()
    names = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=weed.bucket, Prefix="encrypted/wal/")["Contents"])
    # The newest segment: the restore to the latest point needs it, whichever snapshot it starts from.
    victim = [name for name in names if parse_segment(name.removeprefix("encrypted/")) is not None][-1]
    original = s3.get_object(Bucket=weed.bucket, Key=victim)
    data = bytearray(original["Body"].read())
    data[len(data) // 2] ^= 0x01
    s3.put_object(Bucket=weed.bucket, Key=victim, Body=bytes(data), Metadata=original["Metadata"])
    result = kvctl("backup", "verify", url, config=config, env=keyed)
    assert result.returncode == 1 and victim.removeprefix("encrypted/") in result.stdout
    message = fails(kvctl("restore", url, "--data-dir", str(tmp_path / "damaged"), config=config, env=keyed))
    assert victim.removeprefix("encrypted/") in message


def test_the_object_store_stopped_for_a_while_delays_the_archive_and_loses_nothing(
    node_factory: MakeNode, tmp_path: Path
) -> None:
    weed = SeaweedFS(tmp_path / "seaweedfs")
    weed.start()
    try:
        url = f"s3://{weed.server.bucket}/outage"
        env = {
            **weed.server.env,
            "KVSTORE_ARCHIVE_URL": url,
            "KVSTORE_ARCHIVE_TIMEOUT_S": "1",
            "KVSTORE_WAL_SEGMENT_SIZE_BYTES": "16384",
        }
        node = node_factory(env=env).start()
        config = tmp_path / "kvctl.json"
        wait_until(lambda: _status(node)["archive"]["last_snapshot"] is not None, 60, "the first snapshot")
        weed.stop()
        with node.client() as client:  # every write is acknowledged while the store is away
            for index in range(300):
                answer = client.put(f"/v1/kv/outage/{index}", content=b"x" * 200)
                assert answer.status_code == 201, answer.text
            last = answer.json()["commit_lsn"]
        wait_until(lambda: _status(node)["archive"]["last_error"] is not None, 120, "the failure in status")
        assert parse_lsn(_status(node)["archive"]["archived_lsn"] or "0/0") < parse_lsn(last)
        weed.start()
        wait_until(
            lambda: parse_lsn(_status(node)["archive"]["archived_lsn"] or "0/0") >= parse_lsn(last),
            120,
            "the archive caught up",
        )
        assert _status(node)["archive"]["alarm"] is None
        digest = _digest(node)
        node.stop()
        assert "checked: ok" in ok(kvctl("backup", "verify", url, config=config, env=weed.server.env))
        restored = tmp_path / "restored"
        ok(kvctl("restore", url, "--data-dir", str(restored), config=config, env=weed.server.env))
        copy = node_factory("restored")
        copy.data_dir = restored
        copy.start()
        assert _digest(copy) == digest
    finally:
        weed.stop()
