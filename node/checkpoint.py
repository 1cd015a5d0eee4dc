"""Checkpoints: snapshot the store, log CHECKPOINT, update `control`, recycle the WAL.

The snapshot is fuzzy, as PostgreSQL's checkpoints are: the redo LSN is taken at the
start, then the store is packed one shard per event-loop turn while writes go on, so
no request waits behind more than one small shard. Entries packed later may be newer
than the redo LSN; replay from the redo LSN re-applies those after-images, which is
harmless because records are idempotent. Before `control` points at the snapshot,
the WAL is fsynced past everything the snapshot can contain (its minimum recovery
point), so the snapshot never holds a write the WAL could lose.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from . import metrics, records
from .control import Control, write_control
from .datadir import DataDir
from .engine import Engine
from .errors import Unavailable
from .snapshot import SnapshotWriter, encode_chunk, snapshot_name
from .store import SHARD_COUNT
from .wal.format import format_lsn
from .wal.segments import recycle_segments
from .writes import now_ms

log = logging.getLogger(__name__)

PACK_BUDGET_PER_TURN_S = 0.002  # the longest a checkpoint holds the event loop at a time
MAX_QUEUED_CHUNKS = 8  # packed shards waiting for the writer thread (bounds extra memory)


@dataclass(frozen=True, slots=True)
class CheckpointResult:
    redo_lsn: int
    snapshot: str
    entries: int
    snapshot_bytes: int
    segments_removed: int
    seconds: float


class Checkpointer:
    def __init__(self, engine: Engine, datadir: DataDir, control: Control, snapshots_keep: int) -> None:
        self._engine = engine
        self._datadir = datadir
        self.control = control
        self._snapshots_keep = snapshots_keep
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self.last: CheckpointResult | None = None
        self._revision_at_last: int | None = None  # store revision the current snapshot covers
        # What holds WAL past the redo LSN, by name (replication slots, the archiver): each
        # gives the oldest LSN it still needs, given the redo LSN.
        self.wal_holds: dict[str, Callable[[int], int]] = {}

    @property
    def running(self) -> bool:
        return self._lock.locked()

    async def checkpoint(self, reason: str) -> CheckpointResult:
        async with self._lock:
            started = time.perf_counter()
            try:
                result = await self._run(started)
            except BaseException:
                metrics.CHECKPOINTS.labels("failed").inc()
                raise
            metrics.CHECKPOINTS.labels("ok").inc()
            metrics.CHECKPOINT_SECONDS.observe(result.seconds)
            log.info(
                "checkpoint complete",
                extra={
                    "reason": reason,
                    "redo_lsn": format_lsn(result.redo_lsn),
                    "snapshot": result.snapshot,
                    "entries": result.entries,
                    "segments_removed": result.segments_removed,
                    "seconds": round(result.seconds, 3),
                },
            )
            self.last = result
            return result

    async def _run(self, started: float) -> CheckpointResult:
        engine, store = self._engine, self._engine.store
        loop = asyncio.get_running_loop()
        if engine.wal_failed:
            raise Unavailable(f"no checkpoint after a WAL failure: {engine.read_only_reason}")
        redo_lsn = store.applied_lsn
        if self.control.snapshot is not None and store.revision == self._revision_at_last:
            # No key changed since the last checkpoint (only CHECKPOINT records): it is current.
            name = self.control.snapshot
            size = (self._datadir.base / name).stat().st_size
            return CheckpointResult(self.control.redo_lsn, name, len(store), size, 0, time.perf_counter() - started)
        revision_at_start = store.revision
        name = snapshot_name(redo_lsn)
        path = self._datadir.base / name
        writer = await loop.run_in_executor(
            self._executor, SnapshotWriter, path, redo_lsn, self.control.timeline, now_ms()
        )
        writes: deque[asyncio.Future[None]] = deque()
        try:
            turn_started = time.perf_counter()
            for index in range(SHARD_COUNT):
                shard = store.shard(index)
                if shard:
                    frame = encode_chunk(shard.items())
                    writes.append(loop.run_in_executor(self._executor, writer.write_chunk, frame, len(shard)))
                    if len(writes) > MAX_QUEUED_CHUNKS:
                        await writes.popleft()
                # Pack shards back to back for a short budget, then let requests run.
                if time.perf_counter() - turn_started > PACK_BUDGET_PER_TURN_S:
                    await asyncio.sleep(0)
                    turn_started = time.perf_counter()
            await asyncio.gather(*writes)
            consistent_lsn = store.applied_lsn  # the store only ever holds committed records
            size = await loop.run_in_executor(self._executor, writer.finish, store.revision)
        except BaseException:
            await asyncio.gather(*writes, return_exceptions=True)
            await loop.run_in_executor(self._executor, writer.abort)
            raise
        assert engine.writer is not None
        if engine.read_only_reason is None:
            # Informational (recovery starts from control); a replica's WAL is the primary's
            # byte for byte, so a replica's checkpoint (PostgreSQL's restartpoint) logs nothing.
            engine.log_control_record(records.checkpoint_record(redo_lsn, name, now_ms()))
        await engine.writer.sync()  # the minimum recovery point
        control = self.control.replace(
            redo_lsn=redo_lsn, snapshot=name, checkpoint_at_ms=now_ms(), consistent_lsn=consistent_lsn
        )
        await loop.run_in_executor(self._executor, write_control, self._datadir.control, control)
        self.control = control
        self._revision_at_last = revision_at_start
        # The holds are read here, on the event loop that changes them, never on the checkpoint
        # thread: iterating the slots there raced with replicas connecting.
        keep_from = min([redo_lsn, *(hold(redo_lsn) for hold in self.wal_holds.values())])
        removed = await loop.run_in_executor(self._executor, self._remove_old_files, keep_from)
        return CheckpointResult(redo_lsn, name, writer.entries, size, removed, time.perf_counter() - started)

    def _remove_old_files(self, keep_wal_from: int) -> int:
        current = self.control.snapshot
        snapshots = sorted(self._datadir.base.glob("snapshot_*.chk"))
        for old in snapshots[: -self._snapshots_keep]:
            if old.name != current:  # never the one recovery needs, whatever its name sorts as
                old.unlink()
        return len(recycle_segments(self._datadir.wal, keep_wal_from))

    async def update_control(self, **changes: object) -> None:
        async with self._lock:
            control = self.control.replace(**changes)
            await asyncio.get_running_loop().run_in_executor(
                self._executor, write_control, self._datadir.control, control
            )
            self.control = control

    def close(self) -> None:
        self._executor.shutdown(wait=True)
