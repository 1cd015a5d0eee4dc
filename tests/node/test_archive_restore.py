"""Restore from an archive end to end: a real node's data directory archived in the archive's
layout (support/archives.py), `kvctl restore`, `kvctl backup list|verify`, and `kvstored
--restore-from`; the restored node starts as a primary on a new timeline and takes writes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kvstore.node.archive.layout import parse_segment
from kvstore.node.control import ROLE_PRIMARY, read_control
from kvstore.node.datadir import DataDir
from kvstore.node.recovery import recover
from kvstore.node.wal.format import format_lsn, parse_lsn
from support.archives import archive_data_dir
from support.harness import NodeProcess
from support.kvctl_runner import fails, kvctl, kvctl_json, ok

SMALL_SEGMENTS = {"KVSTORE_WAL_SEGMENT_SIZE_BYTES": "4096"}


@dataclass(frozen=True)
class Source:
    root: Path  # the file:// store's directory
    url: str
    digest: dict[str, Any]  # the node's, when it was killed
    commit_lsns: list[str]  # of the writes after the exported snapshot
    keys_before: list[str]  # written before it


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    """A node that wrote 20 keys, exported a snapshot to the archive, wrote 20 more (several 4 KiB
    segments) and was killed; its data directory then archived."""
    base = tmp_path_factory.mktemp("source")
    root = base / "archive"
    url = f"file://{root}"
    node = NodeProcess(base / "node", env=SMALL_SEGMENTS)
    try:
        node.start()
        with node.client() as client:
            for index in range(20):
                assert client.put(f"/v1/kv/before/{index:02}", content=b"a" * 200).status_code == 201
            assert client.post("/v1/admin/snapshots/export", json={"to": url}).status_code == 200
            commit_lsns = []
            for index in range(20):
                answer = client.put(f"/v1/kv/after/{index:02}", content=b"b" * 500)
                assert answer.status_code == 201
                commit_lsns.append(answer.headers["x-kv-commit-lsn"])
            digest = client.get("/v1/admin/digest").json()
        node.kill()  # no final checkpoint: the WAL after the exported snapshot stays
        archive_data_dir(node.data_dir, url)
        yield Source(root, url, digest, commit_lsns, [f"before/{index:02}" for index in range(20)])
    finally:
        node.close()


def copy_of(source: Source, tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "archive-copy"
    shutil.copytree(source.root, root)
    return root, f"file://{root}"


def keys_in(data_dir: Path) -> list[str]:
    return [key for key, _ in recover(DataDir(data_dir)).store.items_sorted() if not key.startswith("_sys.")]


def test_restore_to_latest_starts_a_primary_on_a_new_timeline_with_the_same_digest(
    source: Source, tmp_path: Path, config: Path
) -> None:
    data_dir = tmp_path / "restored"
    output = ok(kvctl("restore", source.url, "--data-dir", str(data_dir), config=config))
    assert "new timeline" in output and "KVSTORE_CLUSTER_KEY" in output
    assert f"Start it with: kvstored --data-dir {data_dir}" in output
    node = NodeProcess(data_dir)
    try:
        node.start()
        with node.client() as client:
            restored = client.get("/v1/admin/digest").json()
            assert (restored["digest"], restored["keys"]) == (source.digest["digest"], source.digest["keys"])
            assert client.put("/v1/kv/after-restore", content=b"new").status_code == 201
        assert node.stop() == 0
    finally:
        node.close()
    control = read_control(DataDir(data_dir).control)
    assert control.timeline == 2 and control.role == ROLE_PRIMARY
    assert "after-restore" in keys_in(data_dir)


def test_restore_to_an_lsn_holds_the_writes_committed_by_then(source: Source, tmp_path: Path, config: Path) -> None:
    data_dir = tmp_path / "restored"
    target = source.commit_lsns[9]
    result = kvctl_json("restore", source.url, "--data-dir", str(data_dir), "--target-lsn", target, config=config)
    assert result["stop_lsn"] == target and result["timeline"] == 2
    assert keys_in(data_dir) == sorted(source.keys_before + [f"after/{index:02}" for index in range(10)])


def test_a_data_dir_in_use_and_a_target_beyond_the_archive_are_refused(
    source: Source, tmp_path: Path, config: Path
) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "control").write_text("{}")
    assert "is not empty (control)" in fails(kvctl("restore", source.url, "--data-dir", str(used), config=config))
    beyond = format_lsn(parse_lsn(source.commit_lsns[-1]) + 100_000)
    message = fails(
        kvctl("restore", source.url, "--data-dir", str(tmp_path / "new"), "--target-lsn", beyond, config=config)
    )
    assert "is beyond the archive" in message and "the latest restorable point is" in message
    assert not (tmp_path / "new").exists()
    # This archive holds no TIME records (its node was not archiving): no time is ever reached.
    late = kvctl(
        "restore",
        source.url,
        "--data-dir",
        str(tmp_path / "new"),
        "--target-time",
        "2100-01-01T00:00:00Z",
        config=config,
    )
    assert "recovery ended before the target (time 2100-01-01T00:00:00.000Z) was reached" in fails(late)
    assert (
        kvctl(
            "restore", source.url, "--data-dir", str(tmp_path / "new"), "--target-time", "soon", config=config
        ).returncode
        == 2
    )


def test_backup_list_shows_restorable_ranges_timelines_and_wal(source: Source, config: Path) -> None:
    listing = kvctl_json("backup", "list", source.url, config=config)
    assert len(listing["snapshots"]) == 1 and listing["problems"] == []
    [restorable] = listing["restorable"]
    assert restorable["to_lsn"] is not None and parse_lsn(restorable["to_lsn"]) >= parse_lsn(source.commit_lsns[-1])
    assert listing["timelines"] == [{"timeline": 1, "parent": None, "begins_at": None}]
    assert listing["wal"]["gaps"] == [] and len(listing["wal"]["ranges"]) == 1
    table = ok(kvctl("backup", "list", source.url, config=config))
    assert "RESTORABLE_TO" in table and "START_LSN" in table and "GAP" not in table


def test_verify_passes_a_whole_archive_and_names_a_flipped_byte(source: Source, tmp_path: Path, config: Path) -> None:
    assert "checked: ok" in ok(kvctl("backup", "verify", source.url, config=config))
    root, url = copy_of(source, tmp_path)
    victim = sorted(p for p in (root / "wal").iterdir() if parse_segment(f"wal/{p.name}") is not None)[1]
    data = bytearray(victim.read_bytes())
    data[40] ^= 0x01
    victim.write_bytes(bytes(data))
    result = kvctl("backup", "verify", url, config=config)
    assert result.returncode == 1 and f"damaged  wal/{victim.name}: " in result.stdout
    assert "SHA-256" in result.stdout
    message = fails(kvctl("restore", url, "--data-dir", str(tmp_path / "restored"), config=config))
    assert f"wal/{victim.name}" in message and "not used" in message


def test_a_gap_is_named_by_verify_and_list(source: Source, tmp_path: Path, config: Path) -> None:
    root, url = copy_of(source, tmp_path)
    segments = sorted(f"wal/{p.name}" for p in (root / "wal").iterdir() if parse_segment(f"wal/{p.name}"))
    assert len(segments) >= 3
    missing = parse_segment(segments[1])
    assert missing is not None
    (root / segments[1]).unlink()
    report = kvctl("backup", "verify", url, "--format", "json", config=config)
    assert report.returncode == 1
    gap = {"start_lsn": format_lsn(missing.start_lsn), "end_lsn": format_lsn(missing.end_lsn)}
    listing = kvctl_json("backup", "list", url, config=config)
    assert [{k: g[k] for k in gap} for g in listing["wal"]["gaps"]] == [gap]
    assert [g["start_lsn"] for g in json.loads(report.stdout)["gaps"]] == [gap["start_lsn"]]


def test_kvstored_restore_from_restores_a_new_data_dir_and_starts_an_existing_one_as_it_is(
    source: Source, tmp_path: Path
) -> None:
    node = NodeProcess(tmp_path / "node", args=["--restore-from", source.url])
    try:
        node.start()
        with node.client() as client:
            restored = client.get("/v1/admin/digest").json()
            assert (restored["digest"], restored["keys"]) == (source.digest["digest"], source.digest["keys"])
            assert client.put("/v1/kv/one-more", content=b"1").status_code == 201
        assert node.stop() == 0
        node.restart()
        with node.client() as client:
            assert client.get("/v1/kv/one-more").status_code == 200
        assert "starting it as it is, not restoring it from the archive" in node.log()
    finally:
        node.close()
