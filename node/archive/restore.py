"""Point-in-time restore: a new data directory from an archive's snapshot plus its WAL.

Like PostgreSQL's archive recovery: the newest snapshot on the target timeline's path from
which the archived WAL reaches the target is downloaded with that WAL (each object checked
against its SHA-256), loaded and replayed in process, always at least to the snapshot's
consistent LSN, then up to the target: an LSN (the records ending at or before it), a time
(up to the first TIME record after it) or, with neither, the end of the archived WAL. The
result is written as a data directory of its own: a snapshot of that state, a control file
on a NEW timeline branching off there, its history, and a WAL that is one segment header.
`kvstored --data-dir DIR` then recovers it as it is and starts a primary.
"""

from __future__ import annotations

import gc
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvstore.replication.timelines import Switch, write_history

from .. import records
from ..control import ROLE_PRIMARY, STATE_SHUT_DOWN, Control, write_control
from ..datadir import LOCK_FILE, DataDir, create_layout
from ..fsutil import fsync_dir
from ..snapshot import SnapshotError, SnapshotReader, SnapshotWriter, encode_chunk, snapshot_name
from ..store import Entry, Store
from ..wal.format import SEGMENT_HEADER_BYTES, SegmentHeader, WalFormatError, format_lsn, parse_lsn, segment_name
from ..wal.reader import WalCorruption, WalScan
from .access import Stores, check_key
from .inventory import Inventory, Piece, timeline_at
from .progress import Progress
from .restore_plan import Plan, RestoreError, Target, parse_time, plan_restore, utc_ms
from .snapshots import Manifest
from .store import ObjectStore

WORK_DIR = ".restore"  # downloads, inside the new data directory; removed at the end
CHUNK_ENTRIES = 1000
# What a data directory may hold before it is restored into: kvstored's own lock and config file.
ALLOWED_BEFORE = frozenset({LOCK_FILE, "config.toml"})

__all__ = ["RestoreError", "RestoreResult", "Target", "parse_time", "restore", "utc_ms"]


@dataclass(frozen=True, slots=True)
class RestoreResult:
    data_dir: Path
    snapshot: Manifest
    segments: int  # WAL segment objects downloaded
    downloaded_bytes: int
    wal_bytes: int  # of WAL replayed: from the snapshot's redo LSN to the stop LSN
    records_replayed: int
    stop_lsn: int
    last_time_ms: int | None  # the last TIME record replayed: the writes it holds are from then or before
    parent_timeline: int
    timeline: int  # the new one
    seconds: float

    def document(self) -> dict[str, Any]:
        return {
            "data_dir": str(self.data_dir),
            "snapshot": self.snapshot.snapshot,
            "snapshot_timeline": self.snapshot.timeline,
            "redo_lsn": self.snapshot.redo_lsn,
            "segments": self.segments,
            "downloaded_bytes": self.downloaded_bytes,
            "wal_bytes_replayed": self.wal_bytes,
            "records_replayed": self.records_replayed,
            "stop_lsn": format_lsn(self.stop_lsn),
            "last_time": utc_ms(self.last_time_ms) if self.last_time_ms is not None else None,
            "parent_timeline": self.parent_timeline,
            "timeline": self.timeline,
            "seconds": round(self.seconds, 3),
        }


def restore(stores: Stores, data_dir: Path, target: Target, progress: Progress | None = None) -> RestoreResult:
    """Restore the archive's state at `target` into `data_dir`, which must not exist or be empty.
    Blocking (downloads, replay, fsyncs): run it in a thread. On failure nothing is left behind."""
    started = time.perf_counter()
    existed = _check_empty(data_dir)
    inventory = Inventory.read(stores.meta)
    if inventory.info is not None:
        check_key(stores, inventory.info)
    plan = plan_restore(inventory, target)
    datadir = DataDir(data_dir)
    create_layout(datadir)
    try:
        work = data_dir / WORK_DIR
        work.mkdir(mode=0o700)
        try:
            snapshot_path, wal_dir = _download(stores.data, work, plan, progress)
            replayed = _replay_quietly(stores.url, snapshot_path, wal_dir, plan)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        timeline = inventory.timelines()[-1] + 1
        system_identifier = int(inventory.info.system_identifier if inventory.info else plan.snapshot.system_identifier)
        _write_data_dir(
            datadir, replayed, plan, timeline, inventory.histories.get(plan.timeline, []), system_identifier
        )
    except BaseException:
        _remove_restored(datadir, existed)
        raise
    return RestoreResult(
        data_dir=data_dir,
        snapshot=plan.snapshot,
        segments=len(plan.pieces),
        downloaded_bytes=plan.download_bytes,
        wal_bytes=replayed.stop_lsn - parse_lsn(plan.snapshot.redo_lsn),
        records_replayed=replayed.records,
        stop_lsn=replayed.stop_lsn,
        last_time_ms=replayed.last_time_ms,
        parent_timeline=plan.timeline,
        timeline=timeline,
        seconds=time.perf_counter() - started,
    )


def _check_empty(data_dir: Path) -> bool:
    """Whether `data_dir` exists; refuses one that holds anything (etcd's rule for a restore)."""
    if not data_dir.exists():
        return False
    if not data_dir.is_dir():
        raise RestoreError(f"{data_dir} is not a directory; restore into a new or empty directory")
    found = sorted(p.name for p in data_dir.iterdir() if p.name not in ALLOWED_BEFORE)
    if found:
        raise RestoreError(
            f"{data_dir} is not empty ({', '.join(found[:5])}); a restore writes a new data directory: "
            "give an empty or new directory, or move this one aside"
        )
    return True


def _remove_restored(datadir: DataDir, existed: bool) -> None:
    for folder in (datadir.wal, datadir.base, datadir.timelines, datadir.log, datadir.root / WORK_DIR):
        shutil.rmtree(folder, ignore_errors=True)
    datadir.control.unlink(missing_ok=True)
    if not existed:
        shutil.rmtree(datadir.root, ignore_errors=True)


def _download(store: ObjectStore, work: Path, plan: Plan, progress: Progress | None) -> tuple[Path, Path]:
    """The snapshot and the WAL pieces into `work`; an ancestor's segment is cut at its switch."""
    if progress is not None:
        progress.begin(plan.download_bytes)
    snapshot_path = work / "snapshot.chk"
    store.get(plan.snapshot.snapshot, snapshot_path)
    if progress is not None:
        progress.advance(plan.snapshot.snapshot, plan.snapshot.bytes)
    wal_dir = work / "WAL"
    wal_dir.mkdir()
    for piece in plan.pieces:
        path = wal_dir / segment_name(piece.start_lsn)
        store.get(piece.segment.name, path)
        _check_header(store.url, piece, path)
        if piece.end_lsn < piece.segment.end_lsn:
            os.truncate(path, piece.end_lsn - piece.start_lsn)
        if progress is not None:
            progress.advance(piece.segment.name, piece.segment.size)
    return snapshot_path, wal_dir


def _check_header(url: str, piece: Piece, path: Path) -> None:
    segment = piece.segment
    with path.open("rb") as file:
        head = file.read(SEGMENT_HEADER_BYTES)
    try:
        header = SegmentHeader.decode(head)
    except WalFormatError as exc:
        raise RestoreError(f"{url}/{segment.name}: {exc}; the archive is damaged (kvctl backup verify {url})") from None
    if (header.timeline, header.start_lsn) != (segment.timeline, segment.start_lsn):
        raise RestoreError(
            f"{url}/{segment.name}: its header says timeline {header.timeline} at {format_lsn(header.start_lsn)}, "
            f"not what its name says; the archive is damaged (kvctl backup verify {url})"
        )


@dataclass(frozen=True, slots=True)
class Replayed:
    store: Store
    stop_lsn: int
    records: int
    last_time_ms: int | None


def _replay_quietly(url: str, snapshot_path: Path, wal_dir: Path, plan: Plan) -> Replayed:
    # As recovery does: the loaded tuples form no cycles, so full GC passes over them are waste.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _replay(url, snapshot_path, wal_dir, plan)
    finally:
        if gc_was_enabled:
            gc.enable()


def _replay(url: str, snapshot_path: Path, wal_dir: Path, plan: Plan) -> Replayed:
    manifest, target = plan.snapshot, plan.target
    redo, consistent = parse_lsn(manifest.redo_lsn), parse_lsn(manifest.consistent_lsn)
    store = Store()
    try:
        reader = SnapshotReader(snapshot_path)
        if reader.info.redo_lsn != redo:
            raise RestoreError(
                f"{url}/{manifest.snapshot}: its redo LSN is {format_lsn(reader.info.redo_lsn)}, its manifest says "
                f"{manifest.redo_lsn}; the archive is damaged"
            )
        store.bulk_load(reader.entries())
    except SnapshotError as exc:
        raise RestoreError(f"{url}/{manifest.snapshot}: {exc}; the archive is damaged") from None
    store.revision = max(store.revision, reader.revision)
    store.applied_lsn = redo
    names = {segment_name(piece.start_lsn): piece.segment.name for piece in plan.pieces}
    scan = WalScan(wal_dir, records.decode, from_lsn=redo)
    count, last_time_ms, reached = 0, None, target.lsn is None and target.time_ms is None
    try:
        for item in scan:
            record = item.record
            if item.lsn >= consistent and _stops_before(target, item.end_lsn, record):
                reached = True
                break
            store.apply(record, item.end_lsn)
            count += 1
            if record[0] == records.TIME:
                last_time_ms = record[1]
        else:
            if scan.torn_tail is not None:
                torn = scan.torn_tail
                raise RestoreError(
                    f"{url}/{names[torn.segment.path.name]}: {torn.reason} at LSN {format_lsn(torn.lsn)}; "
                    f"the archive is damaged (kvctl backup verify {url})"
                )
            reached = reached or (target.lsn is not None and (scan.end_lsn or 0) >= target.lsn)
    except WalCorruption as exc:
        raise RestoreError(
            f"{url}/{names.get(exc.path.name, exc.path.name)}: {exc.reason} at LSN {format_lsn(exc.lsn)}; "
            f"the archive is damaged (kvctl backup verify {url})"
        ) from None
    if not reached:
        raise RestoreError(_not_reached(plan, store.applied_lsn, last_time_ms))
    return Replayed(store, store.applied_lsn, count, last_time_ms)


def _stops_before(target: Target, end_lsn: int, record: records.Record) -> bool:
    if target.lsn is not None:
        return end_lsn > target.lsn
    if target.time_ms is not None:
        return bool(record[0] == records.TIME and record[1] > target.time_ms)
    return False


def _not_reached(plan: Plan, end_lsn: int, last_time_ms: int | None) -> str:
    timeline = timeline_at(plan.path, end_lsn)
    wanted = plan.target.describe()
    seen = f" (its last recorded time is {utc_ms(last_time_ms)})" if last_time_ms is not None else ""
    return (
        f"recovery ended before the target ({wanted}) was reached: the archive's WAL on timeline {timeline} "
        f"ends at {format_lsn(end_lsn)}{seen}; the latest restorable point is {format_lsn(end_lsn)}"
    )


def _write_data_dir(
    datadir: DataDir, replayed: Replayed, plan: Plan, timeline: int, history: list[Switch], system_identifier: int
) -> None:
    """The restored state as a data directory of its own; control last, so a directory without
    one is an unfinished restore that kvstored refuses to initialise over."""
    stop, now_ms = replayed.stop_lsn, int(time.time() * 1000)
    name = snapshot_name(stop)
    writer = SnapshotWriter(datadir.base / name, stop, timeline, now_ms)
    try:
        for batch in _batches(replayed.store.items_sorted()):
            writer.write_chunk(encode_chunk(iter(batch)), len(batch))
        writer.finish(replayed.store.revision)
    except BaseException:
        writer.abort()
        raise
    fd = os.open(datadir.wal / segment_name(stop), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, SegmentHeader(timeline, stop).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(datadir.wal)
    write_history(datadir.timelines, timeline, [*history, Switch(plan.timeline, stop, now_ms)])
    control = Control(
        system_identifier=system_identifier,
        timeline=timeline,
        redo_lsn=stop,
        snapshot=name,
        checkpoint_at_ms=now_ms,
        state=STATE_SHUT_DOWN,
        role=ROLE_PRIMARY,
        consistent_lsn=stop,
    )
    write_control(datadir.control, control)
    fsync_dir(datadir.root)


def _batches(items: Iterator[tuple[str, Entry]]) -> Iterator[list[tuple[str, Entry]]]:
    batch: list[tuple[str, Entry]] = []
    for item in items:
        batch.append(item)
        if len(batch) == CHUNK_ENTRIES:
            yield batch
            batch = []
    if batch:
        yield batch
