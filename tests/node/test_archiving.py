"""Continuous archiving on a real node into a `file://` archive: segments in order with their
timeline histories and snapshots, archive_timeout_s, the object store going away and coming back,
the retention bound and its alarm, encryption, and an archive that belongs to another cluster.

The object store "goes down" by turning the archive's path (a symlink) into a plain file: every
write under it then fails, as root too (CI runs as root, so permissions would not stop it)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx
import orjson

from kvstore.node.archive.access import read_info
from kvstore.node.archive.crypto import MAGIC
from kvstore.node.archive.layout import parse_segment
from kvstore.node.archive.snapshots import list_snapshots
from kvstore.node.archive.store import open_store
from kvstore.node.wal.format import SEGMENT_HEADER_BYTES, SegmentHeader, parse_lsn
from support.harness import MakeNode, NodeProcess
from support.kvctl_runner import as_env, kvctl, ok
from support.waiting import wait_until

ARCHIVE_KEY = "a7" * 32
SMALL_WAL = {
    "KVSTORE_ARCHIVE_TIMEOUT_S": "1",
    "KVSTORE_WAL_SEGMENT_SIZE_BYTES": "16384",
}


class SwitchableArchive:
    """An archive directory reached through a symlink that can be broken and mended."""

    def __init__(self, tmp_path: Path) -> None:
        self.directory = tmp_path / "archive-data"
        self.directory.mkdir()
        self.link = tmp_path / "archive"
        self.link.symlink_to(self.directory)
        self.url = f"file://{self.link}"

    def down(self) -> None:
        self.link.unlink()
        self.link.write_bytes(b"the object store is down\n")

    def up(self) -> None:
        self.link.unlink()
        self.link.symlink_to(self.directory)


def _archive_env(url: str, **extra: str) -> dict[str, str]:
    return {"KVSTORE_ARCHIVE_URL": url, **SMALL_WAL, **extra}


def _status(node: NodeProcess) -> dict[str, Any]:
    with node.client() as client:
        document: dict[str, Any] = client.get("/v1/status").json()
    return document


def _write(node: NodeProcess, prefix: str, count: int, value: bytes = b"v" * 200) -> int:
    """PUT `count` keys; returns the last commit LSN."""
    lsn = 0
    with node.client() as client:
        for index in range(count):
            answer = client.put(f"/v1/kv/{prefix}{index}", content=value)
            assert answer.status_code in (200, 201), answer.text
            lsn = parse_lsn(answer.json()["commit_lsn"])
    return lsn


def _archived_lsn(node: NodeProcess) -> int:
    archived = _status(node)["archive"]["archived_lsn"]
    return 0 if archived is None else parse_lsn(archived)


def _wal_objects(url: str) -> list[Any]:
    return sorted(found for info in open_store(url).list("wal/") if (found := parse_segment(info.name)) is not None)


def _metric(node: NodeProcess, name: str) -> float:
    text = httpx.get(f"{node.url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_segments_histories_and_snapshots_reach_the_archive_in_order(node_factory: MakeNode, tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'archive'}"
    node = node_factory(env=_archive_env(url)).start()
    last_lsn = _write(node, "a/", 300)
    # archive_timeout_s (1 s) closes the segment holding the last write; then it is archived.
    wait_until(lambda: _archived_lsn(node) >= last_lsn, 60, "the last write archived")
    status = _status(node)
    store = open_store(url)
    assert read_info(store).system_identifier == status["system_identifier"]
    objects = _wal_objects(url)
    assert objects[0].start_lsn == 0 and all(o.timeline == 1 for o in objects)
    # One contiguous run: each segment starts where the one before ended.
    assert all(a.end_lsn == b.start_lsn for a, b in zip(objects, objects[1:]))
    assert objects[-1].end_lsn == _archived_lsn(node) >= last_lsn
    for found in objects:  # each object is a whole segment file: its header names its start
        data = store.read(found.name)
        assert len(data) == found.size
        assert SegmentHeader.decode(data[:SEGMENT_HEADER_BYTES]).start_lsn == found.start_lsn
    manifests = list_snapshots(store)
    assert manifests and manifests[0].system_identifier == status["system_identifier"]
    archive = status["archive"]
    assert archive["url"] == url and archive["last_error"] is None and archive["alarm"] is None
    assert archive["last_snapshot"] == manifests[-1].snapshot
    shown = ok(kvctl("status", config=tmp_path / "kvctl.json", env=as_env(node)))
    assert re.search(rf"^archive +{re.escape(url)} archived to {archive['archived_lsn']} ", shown, re.MULTILINE)
    assert _metric(node, 'kvstore_archive_bytes_total{kind="wal"}') >= objects[-1].end_lsn
    assert _metric(node, "kvstore_archive_alarm") == 0
    wait_until(lambda: _status(node)["archive"]["lag_bytes"] == 0, 30, "no archive lag")
    assert _status(node)["archive"]["lag_s"] == 0 and _metric(node, "kvstore_archive_lag_seconds") == 0


def test_an_object_store_that_goes_away_delays_the_archive_never_a_write(
    node_factory: MakeNode, tmp_path: Path
) -> None:
    archive = SwitchableArchive(tmp_path)
    node = node_factory(env=_archive_env(archive.url)).start()
    wait_until(lambda: list_snapshots(open_store(archive.url)) != [], 60, "the first snapshot archived")
    archive.down()
    last_lsn = _write(node, "down/", 300)  # every write is acknowledged while the store is away
    wait_until(lambda: _status(node)["archive"]["last_error"] is not None, 60, "the failure shown in status")
    assert _archived_lsn(node) < last_lsn
    assert _status(node)["archive"]["lag_bytes"] > 0 and _metric(node, "kvstore_archive_failures_total") > 0
    archive.up()
    wait_until(lambda: _archived_lsn(node) >= last_lsn, 90, "the archive caught up")
    objects = _wal_objects(archive.url)
    assert objects[0].start_lsn == 0
    assert all(a.end_lsn == b.start_lsn for a, b in zip(objects, objects[1:])), "a gap in the archive"
    status = _status(node)["archive"]
    assert status["alarm"] is None and status["last_error"] is None


def test_past_the_retention_bound_the_node_raises_an_alarm_and_keeps_its_disk(
    node_factory: MakeNode, tmp_path: Path
) -> None:
    archive = SwitchableArchive(tmp_path)
    bound = 64 * 1024
    env = _archive_env(
        archive.url,
        KVSTORE_ARCHIVE_MAX_RETAINED_BYTES=str(bound),
        KVSTORE_CHECKPOINT_WAL_BYTES="16384",
        KVSTORE_CHECKPOINT_INTERVAL_S="1",
    )
    node = node_factory(env=env).start()
    wait_until(lambda: list_snapshots(open_store(archive.url)) != [], 60, "the first snapshot archived")
    archive.down()
    for round_ in range(10):  # 10 x 100 KiB of WAL: far past the bound
        _write(node, f"full/{round_}/", 100, b"x" * 1000)
    wait_until(lambda: _status(node)["archive"]["alarm"] is not None, 60, "the alarm")
    assert _metric(node, "kvstore_archive_alarm") == 1
    shown = kvctl("status", config=tmp_path / "kvctl.json", env=as_env(node))
    assert "archive.ALARM" in shown.stdout

    def wal_bytes() -> int:
        return sum(entry.stat().st_size for entry in os.scandir(node.data_dir / "WAL"))

    # Recycled past the bound: what stays is the bound, what a checkpoint lets pile up and a segment or two.
    wait_until(lambda: wal_bytes() < bound + 16384 + 4 * 16384, 60, "the WAL recycled past the bound")
    archive.up()
    # The archive takes the WAL that is still there, names the gap, and a snapshot after it ends the alarm.
    wait_until(lambda: _status(node)["archive"]["alarm"] is None, 90, "the alarm cleared by a new snapshot")
    assert _metric(node, "kvstore_archive_alarm") == 0
    # From that snapshot on, the archive is whole again.
    newest = max(list_snapshots(open_store(archive.url)), key=lambda m: m.checkpoint_at_ms)
    last_lsn = _write(node, "after/", 20)
    wait_until(lambda: _archived_lsn(node) >= last_lsn, 60, "the writes after the gap archived")
    after = [o for o in _wal_objects(archive.url) if o.end_lsn > parse_lsn(newest.redo_lsn)]
    assert after[0].start_lsn <= parse_lsn(newest.redo_lsn) and after[-1].end_lsn >= last_lsn
    assert all(a.end_lsn == b.start_lsn for a, b in zip(after, after[1:]))


def test_an_encrypted_archive_holds_no_plain_data(node_factory: MakeNode, tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'archive'}"
    node = node_factory(env=_archive_env(url, KVSTORE_ARCHIVE_KEY=ARCHIVE_KEY)).start()
    last_lsn = _write(node, "secret/", 50, b"plain-text-value-" * 10)
    wait_until(lambda: _archived_lsn(node) >= last_lsn, 60, "the writes archived")
    wait_until(lambda: list_snapshots(open_store(url)) != [], 60, "a snapshot archived")
    store = open_store(url)
    info = read_info(store)
    assert info.key_id is not None and _status(node)["archive"]["encrypted"] is True
    for found in _wal_objects(url):
        data = store.read(found.name)
        assert data.startswith(MAGIC) and b"plain-text-value-" not in data
    manifest = list_snapshots(store)[-1]  # manifests stay readable: LSNs and sizes, no data
    assert manifest.key_id == info.key_id
    assert store.read(manifest.snapshot).startswith(MAGIC)


def test_an_archive_of_another_cluster_is_refused(node_factory: MakeNode, tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'archive'}"
    first = node_factory("first", env=_archive_env(url)).start()
    wait_until(lambda: list_snapshots(open_store(url)) != [], 60, "the first cluster's snapshot")
    second = node_factory("second", env=_archive_env(url)).start()
    wait_until(lambda: _status(second)["archive"]["last_error"] is not None, 60, "the refusal in status")
    error = _status(second)["archive"]["last_error"]
    assert "is the archive of system" in error and _status(first)["system_identifier"] in error
    assert (
        orjson.loads(open_store(url).read("archive.json"))["system_identifier"] == _status(first)["system_identifier"]
    )


def test_old_snapshots_and_the_wal_only_they_need_are_deleted(node_factory: MakeNode, tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'archive'}"
    env = _archive_env(url, KVSTORE_ARCHIVE_SNAPSHOT_INTERVAL_S="1", KVSTORE_ARCHIVE_KEEP_SNAPSHOTS="2")
    node = node_factory(env=env).start()
    seen: set[str] = set()

    def new_snapshot() -> bool:
        snapshot = _status(node)["archive"]["last_snapshot"]
        fresh = snapshot not in seen
        seen.add(snapshot)
        return fresh

    for round_ in range(5):  # a snapshot a second, each after new writes: five of them at least
        last_lsn = _write(node, f"round{round_}/", 50)
        wait_until(lambda lsn=last_lsn: _archived_lsn(node) >= lsn, 60, "the round archived")
        wait_until(new_snapshot, 60, "a new snapshot archived")
    manifests = list_snapshots(open_store(url))
    assert len(seen) >= 5 and len(manifests) == 2
    oldest_redo = min(parse_lsn(m.redo_lsn) for m in manifests)
    objects = _wal_objects(url)
    # Nothing older than the oldest kept snapshot needs is left, and from it on the WAL is whole.
    assert objects and all(o.end_lsn > oldest_redo for o in objects) and objects[0].start_lsn <= oldest_redo
    assert all(a.end_lsn == b.start_lsn for a, b in zip(objects, objects[1:]))
    snapshot_objects = [info.name for info in open_store(url).list("snapshots/")]
    assert len(snapshot_objects) == 4  # two kept, each a snapshot and its manifest
