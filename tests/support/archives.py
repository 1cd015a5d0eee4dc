"""Archives for tests, without the archiver: a stopped node's data directory copied into an object
store in the archive's layout (node/archive/layout.py)."""

from __future__ import annotations

from pathlib import Path

from kvstore.node.archive.layout import ARCHIVE_INFO, ArchiveInfo, SegmentObject, history_name
from kvstore.node.archive.snapshots import export_snapshot, snapshot_dir
from kvstore.node.archive.store import ObjectStore, open_store
from kvstore.node.control import read_control
from kvstore.node.datadir import DataDir
from kvstore.node.wal.format import SEGMENT_HEADER_BYTES, SegmentHeader
from kvstore.node.wal.segments import list_segments


def archive_data_dir(data_dir: Path, url: str, snapshot: bool = True) -> ObjectStore:
    """archive.json, every WAL segment, every timeline history and (with `snapshot`) the snapshot
    control names; objects already there are left as they are (a store is create-only)."""
    datadir = DataDir(data_dir)
    control = read_control(datadir.control)
    store = open_store(url)
    held = {info.name for info in store.list()}
    if ARCHIVE_INFO not in held:
        store.put(ARCHIVE_INFO, ArchiveInfo.new(control.system_identifier, None).encode())
    archive_wal(store, datadir.wal, held)
    for path in sorted(datadir.timelines.glob("*.history")):
        name = history_name(int(path.name.split(".")[0]))  # the node's own names are decimal
        if name not in held:
            store.put(name, path.read_bytes())
    exported = any(name.startswith(snapshot_dir(control.timeline, control.redo_lsn)) for name in held)
    if snapshot and control.snapshot is not None and not exported:
        with (datadir.base / control.snapshot).open("rb") as file:
            export_snapshot(
                store,
                file,
                control.snapshot,
                system_identifier=control.system_identifier,
                timeline=control.timeline,
                redo_lsn=control.redo_lsn,
                consistent_lsn=control.consistent_lsn,
                checkpoint_at_ms=control.checkpoint_at_ms,
            )
    return store


def archive_wal(store: ObjectStore, wal_dir: Path, held: set[str] | None = None) -> list[SegmentObject]:
    """Each segment file as `wal/<TL>-<START>-<END>`, its timeline read from its header."""
    archived = []
    for segment in list_segments(wal_dir):
        data = segment.path.read_bytes()
        header = SegmentHeader.decode(data[:SEGMENT_HEADER_BYTES])
        obj = SegmentObject(header.timeline, segment.start_lsn, segment.start_lsn + len(data))
        if held is None or obj.name not in held:
            store.put(obj.name, data)
        archived.append(obj)
    return archived
