"""Crash recovery: control file, then snapshot, then WAL replay to the end.

A torn tail is cut (a copy kept) and logged; corruption anywhere else stops start-up
with `WalCorruption` naming the file and LSN. The store that comes out holds every
record that reached the disk, in order, through `Store.apply`.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from . import records
from .control import ROLE_REPLICA, STATE_SHUT_DOWN, Control, read_control
from .datadir import DataDir
from .progress import Progress
from .snapshot import SnapshotError, SnapshotReader
from .store import Store
from .wal.format import format_lsn
from .wal.reader import WalCorruption, WalScan
from .wal.segments import TornTail, list_segments, repair_torn_tail

log = logging.getLogger(__name__)

PROGRESS_EVERY_RECORDS_MASK = 1023  # bump the progress count every 1024 records replayed


@dataclass(frozen=True, slots=True)
class Recovered:
    control: Control
    store: Store
    end_lsn: int  # where the WAL continues
    timeline: int
    records_replayed: int
    torn_tail: TornTail | None
    torn_copy: Path | None
    seconds: float


def recover(datadir: DataDir, progress: Progress | None = None) -> Recovered:
    """`progress` counts the snapshot's entries loaded, then the WAL records replayed."""
    # A million new tuples would trigger full cyclic-GC passes over everything loaded so
    # far; none of these objects form cycles, so collect nothing until recovery is done.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _recover(datadir, progress or Progress())
    finally:
        if gc_was_enabled:
            gc.enable()


def _recover(datadir: DataDir, progress: Progress) -> Recovered:
    started = time.perf_counter()
    control = read_control(datadir.control)
    if control.state != STATE_SHUT_DOWN:
        log.warning("data directory was not shut down cleanly; recovering", extra={"state": control.state})
    store = Store()
    if control.snapshot is not None:
        path = datadir.base / control.snapshot
        try:
            snapshot = SnapshotReader(path)
        except FileNotFoundError:
            raise SnapshotError(path, "named by control but missing") from None
        if snapshot.info.redo_lsn != control.redo_lsn:
            raise SnapshotError(path, f"redo LSN {format_lsn(snapshot.info.redo_lsn)} differs from control's")
        store.bulk_load(snapshot.entries(progress))
        store.revision = max(store.revision, snapshot.revision)  # deletes may have gone higher
    store.applied_lsn = control.redo_lsn
    replayed = 0
    torn_tail: TornTail | None = None
    torn_copy: Path | None = None
    timeline = control.timeline
    if list_segments(datadir.wal):
        scan = WalScan(datadir.wal, records.decode, from_lsn=control.redo_lsn)
        for item in scan:
            store.apply(item.record, item.end_lsn)
            replayed += 1
            if not replayed & PROGRESS_EVERY_RECORDS_MASK:
                progress.done += PROGRESS_EVERY_RECORDS_MASK + 1
        assert scan.end_lsn is not None
        end_lsn = scan.end_lsn
        torn_tail = scan.torn_tail
        if torn_tail is not None:
            torn_copy = repair_torn_tail(torn_tail)
        timeline = scan.last_timeline or timeline
    elif control.redo_lsn == 0:
        end_lsn = 0  # a new data directory: the writer creates the first segment
    elif control.role == ROLE_REPLICA and control.replica_start_lsn is not None:
        end_lsn = control.replica_start_lsn  # fresh from a base backup: the stream brings the WAL
    else:
        raise WalCorruption(datadir.wal, control.redo_lsn, "no WAL segments, but control says WAL is needed")
    seconds = time.perf_counter() - started
    log.info(
        "recovery complete",
        extra={
            "redo_lsn": format_lsn(control.redo_lsn),
            "end_lsn": format_lsn(end_lsn),
            "records_replayed": replayed,
            "keys": len(store),
            "seconds": round(seconds, 3),
        },
    )
    return Recovered(control, store, end_lsn, timeline, replayed, torn_tail, torn_copy, seconds)
