"""Restore and verify in process, on a WAL the engine writes with TIME records (as it does while
archiving): stopping at an LSN and at a time between two writes, refusing what the archive
cannot give, and the data directory a restore leaves."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from kvstore.node import records
from kvstore.node.archive.access import Stores
from kvstore.node.archive.inventory import Inventory
from kvstore.node.archive.layout import ARCHIVE_INFO, ArchiveInfo, SegmentObject
from kvstore.node.archive.restore import RestoreError, Target, parse_time, restore
from kvstore.node.archive.snapshots import export_snapshot
from kvstore.node.archive.store import ObjectStore, open_store
from kvstore.node.archive.verify import verify
from kvstore.node.control import ROLE_PRIMARY, STATE_SHUT_DOWN, read_control
from kvstore.node.datadir import DataDir
from kvstore.node.recovery import recover
from kvstore.node.snapshot import SnapshotWriter
from kvstore.node.store import VALUE
from kvstore.node.wal.reader import WalScan
from kvstore.replication.timelines import Switch, read_history
from support.archives import archive_wal
from support.engine import engine_on_disk

SYSTEM_IDENTIFIER = 7_000_000_000_000_000_001
WRITES = 16


@dataclass(frozen=True)
class Archived:
    store: ObjectStore
    root: Path
    commit_lsns: list[int]  # of write i
    after_ms: list[int]  # a time after write i committed and before write i + 1 was logged
    segments: list[SegmentObject]

    @property
    def stores(self) -> Stores:
        return Stores(self.store, self.store, None)


@pytest.fixture
def archived(tmp_path: Path) -> Archived:
    """k0..k15 written 5 ms apart with TIME records, in 4 KiB segments, archived with an empty
    snapshot from before the first write."""
    wal_dir = tmp_path / "wal"
    wal_dir.mkdir()
    commit_lsns: list[int] = []
    after_ms: list[int] = []
    started_ms = int(time.time() * 1000)

    async def write() -> None:
        async with engine_on_disk(wal_dir, segment_size_bytes=4096) as engine:
            engine.time_marks = True
            for index in range(WRITES):
                result = await engine.put(f"k{index}", b"x" * 700)
                commit_lsns.append(result.commit_lsn)
                after_ms.append(int(time.time() * 1000))
                await asyncio.sleep(0.005)

    asyncio.run(write())
    root = tmp_path / "archive"
    store = open_store(f"file://{root}")
    store.put(ARCHIVE_INFO, ArchiveInfo.new(SYSTEM_IDENTIFIER, None).encode())
    segments = archive_wal(store, wal_dir)
    snapshot = tmp_path / "empty.chk"
    SnapshotWriter(snapshot, redo_lsn=0, timeline=1, created_at_ms=started_ms).finish(revision=0)
    with snapshot.open("rb") as file:
        export_snapshot(
            store,
            file,
            snapshot.name,
            system_identifier=SYSTEM_IDENTIFIER,
            timeline=1,
            redo_lsn=0,
            consistent_lsn=0,
            checkpoint_at_ms=started_ms - 1,
        )
    return Archived(store, root, commit_lsns, after_ms, segments)


def keys_in(data_dir: Path) -> dict[str, bytes]:
    recovered = recover(DataDir(data_dir))
    return {key: entry[VALUE] for key, entry in recovered.store.items_sorted()}


def test_the_engine_logs_time_marks_across_several_segments(archived: Archived) -> None:
    assert len(archived.segments) >= 2
    inventory = Inventory.read(archived.store)
    spans, gaps = inventory.coverage(inventory.path(1))
    assert gaps == [] and len(spans) == 1 and spans[0].end_lsn == archived.segments[-1].end_lsn


def test_restore_to_an_lsn_holds_exactly_the_writes_committed_by_then(archived: Archived, tmp_path: Path) -> None:
    target = archived.commit_lsns[3]
    result = restore(archived.stores, tmp_path / "restored", Target(lsn=target))
    assert result.stop_lsn == target and result.timeline == 2 and result.parent_timeline == 1
    assert sorted(keys_in(tmp_path / "restored")) == [f"k{i}" for i in range(4)]
    # A target inside a record stops before that record.
    result = restore(archived.stores, tmp_path / "inside", Target(lsn=archived.commit_lsns[5] - 3))
    assert sorted(keys_in(tmp_path / "inside")) == [f"k{i}" for i in range(5)]


def test_restore_to_a_time_between_two_writes_stops_before_the_later(archived: Archived, tmp_path: Path) -> None:
    result = restore(archived.stores, tmp_path / "restored", Target(time_ms=archived.after_ms[5]))
    assert sorted(keys_in(tmp_path / "restored")) == [f"k{i}" for i in range(6)]
    assert result.last_time_ms is not None and result.last_time_ms <= archived.after_ms[5]
    assert result.stop_lsn == archived.commit_lsns[5]


def test_restore_to_the_latest_point_replays_the_whole_archive(archived: Archived, tmp_path: Path) -> None:
    data_dir = tmp_path / "restored"
    result = restore(archived.stores, data_dir, Target())
    assert result.stop_lsn == archived.commit_lsns[-1] and result.segments == len(archived.segments)
    assert result.records_replayed > WRITES  # TIME records too
    assert keys_in(data_dir) == {f"k{i}": b"x" * 700 for i in range(WRITES)}
    # What the data directory holds: a new timeline branching off at the stop LSN, shut down.
    control = read_control(DataDir(data_dir).control)
    assert (control.timeline, control.role, control.state) == (2, ROLE_PRIMARY, STATE_SHUT_DOWN)
    assert control.system_identifier == SYSTEM_IDENTIFIER
    assert control.redo_lsn == control.consistent_lsn == result.stop_lsn
    history = read_history(DataDir(data_dir).timelines, 2)
    assert [(s.parent, s.switch_lsn) for s in history] == [(1, result.stop_lsn)]
    assert sorted(p.name for p in data_dir.iterdir()) == ["WAL", "base", "control", "log", "timelines"]
    assert list(WalScan(DataDir(data_dir).wal, records.decode)) == []  # one segment header, nothing else


def test_targets_beyond_the_archive_are_refused_naming_the_latest_point(archived: Archived, tmp_path: Path) -> None:
    end = archived.segments[-1].end_lsn
    with pytest.raises(RestoreError, match="the latest restorable point is") as beyond:
        restore(archived.stores, tmp_path / "lsn", Target(lsn=end + 1000))
    assert "WAL on timeline 1 ends at" in str(beyond.value)
    with pytest.raises(RestoreError, match="recovery ended before the target") as late:
        restore(archived.stores, tmp_path / "time", Target(time_ms=archived.after_ms[-1] + 60_000))
    assert "its last recorded time is" in str(late.value)
    with pytest.raises(RestoreError, match="before every snapshot"):
        restore(archived.stores, tmp_path / "early", Target(time_ms=archived.after_ms[0] - 3_600_000))
    with pytest.raises(RestoreError, match="knows no timeline 5"):
        restore(archived.stores, tmp_path / "timeline", Target(timeline=5))
    # Nothing is left behind by a refused restore.
    assert not any((tmp_path / name).exists() for name in ("lsn", "time", "early", "timeline"))


def test_a_data_dir_that_holds_anything_is_refused(archived: Archived, tmp_path: Path) -> None:
    data_dir = tmp_path / "used"
    data_dir.mkdir()
    (data_dir / "notes.txt").write_text("mine")
    with pytest.raises(RestoreError, match=r"is not empty \(notes.txt\)"):
        restore(archived.stores, data_dir, Target())
    assert [p.name for p in data_dir.iterdir()] == ["notes.txt"]


def test_a_gap_stops_restore_and_verify_names_it(archived: Archived, tmp_path: Path) -> None:
    missing = archived.segments[1]
    archived.store.delete(missing.name)
    with pytest.raises(RestoreError, match="ends at .*the latest restorable point is"):
        restore(archived.stores, tmp_path / "restored", Target(lsn=archived.commit_lsns[-1]))
    report = verify(archived.stores)
    assert not report.ok and report.damaged == []
    assert [(gap.start_lsn, gap.end_lsn) for gap in report.gaps] == [(missing.start_lsn, missing.end_lsn)]


def test_a_damaged_record_is_never_skipped(archived: Archived, tmp_path: Path) -> None:
    """A byte flipped before the object's SHA-256 was recorded (damaged on the node's disk): the
    store's checksum passes, the record's CRC does not."""
    victim = archived.segments[1]
    path = archived.root / victim.name
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF
    archived.store.delete(victim.name)
    archived.store.put(victim.name, bytes(data))
    with pytest.raises(RestoreError, match=f"{victim.name}: record checksum mismatch|{victim.name}: record length"):
        restore(archived.stores, tmp_path / "restored", Target())
    report = verify(archived.stores)
    assert [d.name for d in report.damaged] == [victim.name]
    assert "at LSN" in report.damaged[0].reason


def test_timelines_are_followed_and_an_ancestor_is_cut_at_its_switch(archived: Archived, tmp_path: Path) -> None:
    """A history that makes timeline 2 branch off timeline 1 at write 3: restoring timeline 2
    uses timeline 1's WAL only below the switch."""
    switch = archived.commit_lsns[2]
    archived.store.put(
        "timelines/00000002.history", f'[{{"parent": 1, "switch_lsn": {switch}, "time_ms": 1}}]'.encode()
    )
    inventory = Inventory.read(archived.store)
    assert inventory.histories[2] == [Switch(1, switch, 1)]
    assert [(s.timeline, s.start_lsn, s.end_lsn) for s in inventory.path(2)] == [(1, 0, switch), (2, switch, None)]
    result = restore(archived.stores, tmp_path / "restored", Target(timeline=2))
    assert result.stop_lsn == switch and result.timeline == 3
    assert sorted(keys_in(tmp_path / "restored")) == ["k0", "k1", "k2"]


def test_target_times_are_iso_8601_with_utc_for_no_offset() -> None:
    assert parse_time("2026-05-01T12:00:00.250Z") == 1_777_636_800_250
    assert parse_time("2026-05-01T14:00:00.250+02:00") == 1_777_636_800_250
    assert parse_time("2026-05-01T12:00:00.250") == 1_777_636_800_250
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_time("yesterday")


def test_verify_names_a_manifest_whose_snapshot_is_gone(archived: Archived) -> None:
    assert verify(archived.stores).ok
    [manifest] = Inventory.read(archived.store).snapshots
    archived.store.delete(manifest.snapshot)
    report = verify(archived.stores)
    assert [(d.name, d.reason) for d in report.damaged] == [
        ("snapshots/00000001-0000000000000000/manifest.json", f"names {manifest.snapshot}, which is not in the archive")
    ]
