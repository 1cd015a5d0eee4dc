"""Snapshots (write, read, damage) and the store's apply/bulk_load, without any process."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvstore.node import records
from kvstore.node.snapshot import SnapshotError, SnapshotReader, SnapshotWriter, encode_chunk
from kvstore.node.store import Store

ENTRIES = {f"k{i:04d}": (f"v{i}".encode(), i + 1, 1000 + i, (5000 + i) if i % 3 == 0 else 0) for i in range(2500)}


def write_snapshot(path: Path, revision: int = 9999) -> None:
    writer = SnapshotWriter(path, redo_lsn=1234, timeline=1, created_at_ms=42)
    items = list(ENTRIES.items())
    for start in range(0, len(items), 1000):
        chunk = items[start : start + 1000]
        writer.write_chunk(encode_chunk(chunk), len(chunk))
    writer.finish(revision)


def load(path: Path) -> tuple[Store, SnapshotReader]:
    reader = SnapshotReader(path)
    store = Store()
    store.bulk_load(reader.entries())
    return store, reader


def test_round_trip_into_a_store(tmp_path: Path) -> None:
    path = tmp_path / "snap.chk"
    write_snapshot(path)
    store, reader = load(path)
    assert reader.info.redo_lsn == 1234 and reader.revision == 9999
    assert len(store) == len(ENTRIES)
    assert dict(store.items()) == ENTRIES
    assert store.revision == max(entry[1] for entry in ENTRIES.values())
    page, more = store.scan("k00", None, 5, now_ms=0)
    assert [key for key, _ in page] == ["k0000", "k0001", "k0002", "k0003", "k0004"] and more
    # The expiry queue was rebuilt: keys with expires_at <= now come out, oldest first.
    assert store.due_expiries(now_ms=5003, limit=10) == [("k0000", 1), ("k0003", 4)]


@pytest.mark.parametrize("cut", [1, 100, 5000])
def test_a_truncated_snapshot_is_refused(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "snap.chk"
    write_snapshot(path)
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    with pytest.raises(SnapshotError):
        load(path)


def test_a_flipped_byte_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "snap.chk"
    write_snapshot(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        load(path)


def test_an_unfinished_snapshot_never_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "snap.chk"
    writer = SnapshotWriter(path, redo_lsn=1, timeline=1, created_at_ms=1)
    writer.write_chunk(encode_chunk([("a", (b"1", 1, 1, 0))]), 1)
    writer.abort()
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_apply_is_idempotent_and_versions_only_grow() -> None:
    store = Store()
    txn = records.txn_record([records.set_record("a", b"1", 5, 1, 0), records.del_record("b", 5)])
    for record, end_lsn in [(records.set_record("b", b"x", 4, 1, 0), 10), (txn, 20)]:
        store.apply(record, end_lsn)
    snapshot = dict(store.items())
    store.apply(txn, 20)  # replaying an after-image again changes nothing
    assert dict(store.items()) == snapshot == {"a": (b"1", 5, 1, 0)}
    assert store.revision == 5 and store.applied_lsn == 20
    store.apply(records.del_record("a", 6), 30)
    assert len(store) == 0 and store.revision == 6


def test_expired_entries_are_hidden_before_the_expirer_runs() -> None:
    store = Store()
    store.apply(records.set_record("t", b"v", 1, 0, 1000), 1)
    assert store.get("t", now_ms=999) is not None
    assert store.get("t", now_ms=1000) is None
    assert store.scan("", None, 10, now_ms=1000) == ([], False)


def test_the_store_counts_and_reports_changes_under_the_watched_prefix_only() -> None:
    store = Store()
    seen: list[tuple[str, bytes | None]] = []
    store.watch("cat.", lambda key, entry: seen.append((key, None if entry is None else entry[0])))
    store.apply(records.set_record("data", b"x", 1, 0, 0), 10)
    assert store.watched_epoch == 0 and seen == []
    store.apply(records.set_record("cat.a", b"1", 2, 0, 0), 20)
    store.apply(records.del_record("cat.a", 3), 30)
    assert store.watched_epoch == 2 and seen == [("cat.a", b"1"), ("cat.a", None)]
