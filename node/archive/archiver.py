"""Continuous archiving on a primary (PostgreSQL's archiver, with pgBackRest's snapshots).

Every completed WAL segment goes to the object store once, in LSN order, named by timeline and
LSN range (layout.py); the timeline histories go with them; every archive_snapshot_interval_s a
fresh checkpoint's snapshot follows, and snapshots beyond archive_keep_snapshots are deleted with
the WAL only they needed. A segment with writes is closed after archive_timeout_s, so the archive
is never further behind than that, a poll and an upload.

A segment leaves the disk only once archived: the archiver holds the checkpointer's recycling
(`hold`) at the end of what it archived, up to archive_max_retained_bytes of WAL. Past that the
node keeps taking writes and recycles anyway, raising an alarm (status, metrics) that stays up
until a snapshot taken after the resulting gap is archived. An object store that is down or slow
never blocks a write: the archiver retries, backing off, and only its own thread waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .. import metrics
from ..checkpoint import Checkpointer
from ..config import Settings
from ..datadir import DataDir
from ..engine import Engine
from ..wal.format import SEGMENT_HEADER_BYTES, SegmentHeader, format_lsn, parse_lsn
from ..wal.segments import Segment, list_segments
from .access import Stores, claim
from .layout import WAL, SegmentObject, history_name, parse_history_name, parse_segment, utc_iso
from .snapshots import MANIFEST_OBJECT, SNAPSHOT_OBJECT, Manifest, export_checkpoint, list_snapshots, snapshot_dir
from .store import ArchiveError, ObjectExists, ObjectStore

log = logging.getLogger(__name__)

POLL_S = 0.25
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0


class Archiver:
    def __init__(
        self, settings: Settings, datadir: DataDir, engine: Engine, checkpointer: Checkpointer, stores: Stores
    ) -> None:
        self._settings = settings
        self._datadir = datadir
        self._engine = engine
        self._checkpointer = checkpointer
        self._stores = stores
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archiver")
        self._archived: set[SegmentObject] = set()  # segment objects the archive holds
        self._histories: set[int] = set()  # timelines whose history the archive holds
        self._timelines: dict[Path, int] = {}  # segment file -> the timeline in its header
        self._ready = False  # archive.json checked and the archive listed
        self._oldest_needed = 0  # WAL ending before the oldest archived snapshot's redo LSN is not uploaded
        # Where the WAL archived in order ends: everything local before it is in the archive.
        self.archived_through: int | None = None
        # Segment start LSN -> when the archiver first saw records in it (monotonic), until archived:
        # how long the oldest unarchived write has waited, and when the open segment is due.
        self._first_seen: dict[int, float] = {}
        self._open_start: int | None = None  # the open segment, once it holds records
        self.last_archived_at: float | None = None
        self.last_snapshot: Manifest | None = None
        self.last_snapshot_at: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.gap: tuple[int, int] | None = None  # WAL recycled unarchived: [from, to)
        metrics.bind_gauge(metrics.ARCHIVE_LAG_BYTES, lambda: self.lag_bytes)
        metrics.bind_gauge(metrics.ARCHIVE_LAG_SECONDS, lambda: self.lag_s)
        metrics.bind_gauge(metrics.ARCHIVE_ALARM, lambda: 1 if self.alarm else 0)

    # -- what the checkpointer, status and metrics read ------------------------------------

    def hold(self, redo_lsn: int) -> int:
        """The checkpointer's WAL hold: keep what is not archived yet, up to the bound."""
        keep_from = self._keep_from(redo_lsn)
        if keep_from < redo_lsn and self.retention_exceeded:
            log.error(
                "archive retention bound passed: recycling WAL that is not archived yet",
                extra={"unarchived_bytes": self.lag_bytes, "bound": self._settings.archive_max_retained_bytes},
            )
            return redo_lsn
        return keep_from

    def _keep_from(self, redo_lsn: int) -> int:
        if self.archived_through is not None:
            return self.archived_through
        oldest = list_segments(self._datadir.wal)
        return oldest[0].start_lsn if oldest else redo_lsn

    @property
    def retention_exceeded(self) -> bool:
        return self.lag_bytes > self._settings.archive_max_retained_bytes

    @property
    def alarm(self) -> str | None:
        if self.gap is not None:
            return (
                f"the archive misses the WAL from {format_lsn(self.gap[0])} to {format_lsn(self.gap[1])} "
                "(recycled before it could be archived): no restore reaches past it until the next snapshot is archived"
            )
        if self.retention_exceeded:
            return (
                f"more than archive_max_retained_bytes ({self._settings.archive_max_retained_bytes}) of WAL waits for "
                "the archive: it is recycled unarchived; check the object store"
            )
        return None

    @property
    def lag_bytes(self) -> int:
        writer = self._engine.writer
        if writer is None:
            return 0
        lag = writer.end_lsn - self._keep_from(writer.end_lsn)
        return max(0, lag - (0 if writer.segment_has_records else SEGMENT_HEADER_BYTES))

    @property
    def lag_s(self) -> float:
        return time.monotonic() - min(self._first_seen.values()) if self._first_seen else 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "url": self._stores.url,
            "encrypted": self._stores.key_id is not None,
            "archived_lsn": None if self.archived_through is None else format_lsn(self.archived_through),
            "last_archived_at": _iso(self.last_archived_at),
            "lag_bytes": self.lag_bytes,
            "lag_s": round(self.lag_s, 3),
            "last_snapshot": None if self.last_snapshot is None else self.last_snapshot.snapshot,
            "last_snapshot_at": _iso(self.last_snapshot_at),
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
            "alarm": self.alarm,
        }

    # -- the task ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Archive until cancelled; a failure is logged, shown in status, and retried."""
        delay_s = RETRY_FIRST_S
        try:
            while True:
                try:
                    await self._step()
                    delay_s = RETRY_FIRST_S
                    await asyncio.sleep(self._sleep_s())
                except (ArchiveError, OSError) as error:
                    self.last_error, self.last_error_at = str(error), time.time()
                    log.warning("archiving failed; retrying", extra={"error": str(error), "retry_in_s": delay_s})
                    await asyncio.sleep(delay_s)
                    delay_s = min(delay_s * 2, RETRY_MAX_S)
        finally:
            self._thread.shutdown(wait=False, cancel_futures=True)

    async def _step(self) -> None:
        if not self._ready:
            await self._setup()
        await self._archive_histories()
        segments = list_segments(self._datadir.wal)
        await self._archive_segments(segments[:-1])
        self._switch_when_due(segments[-1] if segments else None)
        if self._snapshot_due():
            await self._archive_snapshot()

    def _sleep_s(self) -> float:
        if self._open_start is None:
            return POLL_S
        due = self._first_seen[self._open_start] + self._settings.archive_timeout_s - time.monotonic()
        return max(0.0, min(POLL_S, due))

    async def _call(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    async def _setup(self) -> None:
        """Check archive.json (writing it into a new archive), then list what is archived."""
        try:
            await self._call(claim, self._stores, self._checkpointer.control.system_identifier)
            objects = await self._call(self._stores.meta.list, f"{WAL}/")
            manifests = await self._call(list_snapshots, self._stores.meta)
        except ArchiveError:
            metrics.ARCHIVE_FAILURES.labels("setup").inc()
            raise
        self._archived = {found for info in objects if (found := parse_segment(info.name)) is not None}
        histories = await self._call(self._stores.meta.list, "timelines/")
        self._histories = {tl for info in histories if (tl := parse_history_name(info.name)) is not None}
        self._note_snapshots(manifests)
        self._ready = True
        log.info("archiving", extra={"url": self._stores.url, "segments_archived": len(self._archived)})

    def _note_snapshots(self, manifests: list[Manifest]) -> None:
        if manifests:
            newest = max(manifests, key=lambda m: m.checkpoint_at_ms)
            self.last_snapshot, self.last_snapshot_at = newest, newest.checkpoint_at_ms / 1000
            self._oldest_needed = min(parse_lsn(m.redo_lsn) for m in manifests)

    async def _archive_histories(self) -> None:
        for path in sorted(self._datadir.timelines.glob("*.history")):
            timeline = int(path.stem)
            if timeline in self._histories:
                continue
            data = path.read_bytes()
            await self._upload(self._stores.meta, history_name(timeline), data, "history")
            self._histories.add(timeline)

    async def _archive_segments(self, completed: list[Segment]) -> None:
        if not completed:
            return
        if self.archived_through is None:
            self.archived_through = completed[0].start_lsn
        writer = self._engine.writer
        assert writer is not None
        for segment in completed:
            if segment.end_lsn <= self.archived_through:
                continue
            if segment.start_lsn > self.archived_through:
                self._found_gap(self.archived_through, segment.start_lsn)
            self._first_seen.setdefault(segment.start_lsn, time.monotonic())
            found = SegmentObject(self._timeline_of(segment), segment.start_lsn, segment.end_lsn)
            if found not in self._archived and segment.end_lsn > self._oldest_needed:
                if segment.end_lsn > writer.flush_lsn:  # fsync=off/interval: never archive what a crash could undo
                    await writer.sync()
                try:
                    data = await self._call(_read_segment, segment)
                except FileNotFoundError:  # recycled past the retention bound while we waited
                    continue
                await self._upload(self._stores.data, found.name, data, "wal")
                self._archived.add(found)
                self.last_archived_at = time.time()
                metrics.ARCHIVE_LAST_ARCHIVED.set(self.last_archived_at)
            self.archived_through = segment.end_lsn
        # Archived, or recycled before it could be: nothing before archived_through waits any more.
        self._first_seen = {start: seen for start, seen in self._first_seen.items() if start >= self.archived_through}

    def _found_gap(self, start: int, end: int) -> None:
        self.gap = (start if self.gap is None else self.gap[0], end)
        log.error(
            "the archive has a gap: WAL was recycled before it was archived; archiving a snapshot to close it",
            extra={"from": format_lsn(start), "to": format_lsn(end)},
        )

    def _timeline_of(self, segment: Segment) -> int:
        timeline = self._timelines.get(segment.path)
        if timeline is None:
            with open(segment.path, "rb") as file:
                timeline = SegmentHeader.decode(file.read(SEGMENT_HEADER_BYTES)).timeline
            self._timelines = {path: tl for path, tl in self._timelines.items() if path.exists()}
            self._timelines[segment.path] = timeline
        return timeline

    def _switch_when_due(self, current: Segment | None) -> None:
        """archive_timeout_s: close the open segment once its first records are that old."""
        writer = self._engine.writer
        assert writer is not None
        if current is None or not writer.segment_has_records:
            self._open_start = None
            return
        self._open_start = current.start_lsn
        first_seen = self._first_seen.setdefault(current.start_lsn, time.monotonic())
        if time.monotonic() - first_seen >= self._settings.archive_timeout_s and writer.switch_segment():
            log.debug("archive_timeout_s: segment closed", extra={"lsn": format_lsn(writer.end_lsn)})
            self._open_start = None

    # -- snapshots and retention ------------------------------------------------------------

    def _snapshot_due(self) -> bool:
        if self.gap is not None or self.last_snapshot_at is None:
            return True
        return time.time() - self.last_snapshot_at >= self._settings.archive_snapshot_interval_s

    async def _archive_snapshot(self) -> None:
        checkpointer = self._checkpointer
        result = await checkpointer.checkpoint("archive")
        control = checkpointer.control
        # Opened at once: a later checkpoint may remove it from base/; the open file keeps its bytes.
        snapshot = (self._datadir.base / result.snapshot).open("rb")
        try:
            manifest = await self._call(export_checkpoint, self._stores, snapshot, result.snapshot, control)
        except ObjectExists:  # no key changed since the last one: it is archived already
            manifest = None
        except ArchiveError:
            metrics.ARCHIVE_FAILURES.labels("snapshot").inc()
            raise
        finally:
            snapshot.close()
        if manifest is not None:
            metrics.ARCHIVE_BYTES.labels("snapshot").inc(manifest.bytes)
            log.info("snapshot archived", extra={"snapshot": manifest.snapshot, "bytes": manifest.bytes})
        self.last_snapshot_at = time.time()
        metrics.ARCHIVE_LAST_SNAPSHOT.set(self.last_snapshot_at)
        if self.gap is not None and control.redo_lsn >= self.gap[1]:
            log.info("archive gap closed by a snapshot after it", extra={"redo_lsn": format_lsn(control.redo_lsn)})
            self.gap = None
        await self._apply_retention()

    async def _apply_retention(self) -> None:
        """Keep archive_keep_snapshots snapshots, and the WAL from the oldest one's redo LSN on."""
        meta = self._stores.meta
        try:
            manifests = sorted(await self._call(list_snapshots, meta), key=lambda m: m.checkpoint_at_ms)
            if manifests:
                self.last_snapshot = manifests[-1]
            keep = self._settings.archive_keep_snapshots
            for old in manifests[:-keep]:
                directory = snapshot_dir(old.timeline, parse_lsn(old.redo_lsn))
                # The manifest first: a snapshot without one is never used, so no half-deleted one is.
                await self._call(meta.delete, f"{directory}/{MANIFEST_OBJECT}")
                await self._call(self._stores.data.delete, f"{directory}/{SNAPSHOT_OBJECT}")
                log.info("archived snapshot deleted (archive_keep_snapshots)", extra={"snapshot": old.snapshot})
            kept = manifests[-keep:]
            if not kept:
                return
            self._oldest_needed = min(parse_lsn(m.redo_lsn) for m in kept)
            for found in sorted(self._archived):
                if found.end_lsn <= self._oldest_needed:
                    await self._call(self._stores.data.delete, found.name)
                    self._archived.discard(found)
        except ArchiveError:
            metrics.ARCHIVE_FAILURES.labels("retention").inc()
            raise

    async def _upload(self, store: ObjectStore, name: str, data: bytes, kind: str) -> None:
        try:
            await self._call(store.put, name, data)
        except ObjectExists:
            log.info("already archived", extra={"object": name})  # a restart between upload and bookkeeping
            return
        except ArchiveError:
            metrics.ARCHIVE_FAILURES.labels(kind).inc()
            raise
        metrics.ARCHIVE_BYTES.labels(kind).inc(len(data))
        if self.last_error is not None:
            log.info("archiving works again", extra={"object": name})
            self.last_error = None


def _read_segment(segment: Segment) -> bytes:
    with open(segment.path, "rb") as file:
        data = file.read(segment.size_bytes)
    header = SegmentHeader.decode(data)
    if header.start_lsn != segment.start_lsn or len(data) != segment.size_bytes:
        raise ArchiveError(f"{segment.path} changed while it was read for the archive")
    return data


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else utc_iso(seconds)
