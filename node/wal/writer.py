"""Appending to the WAL: segment rotation, the durability policy and group commit.

`append` runs on the event loop: it frames the payload, assigns its LSN and queues the
bytes; it never touches the disk. Queued bytes reach the disk in batches:

- fsync=always: one flush at a time runs in a dedicated thread (write + fsync, which
  release the GIL); everything appended while it runs goes into the next flush, so
  one fsync covers many writes and throughput grows with concurrency (group commit).
- fsync=interval / off: each record is written into the page cache by `append`
  itself (one small write syscall, no waiting for a later loop turn), so the write
  commits at once; `interval` also fsyncs from a background task every `interval_s`.

A failed write or fsync is not retried (PostgreSQL's fsyncgate lesson: after a failed
fsync the page cache cannot be trusted). The writer turns failed, every waiting and
later write gets `WalFailed`, and the node must be restarted to recover from disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .. import metrics
from ..fsutil import fsync_dir
from .format import FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES, SegmentHeader, encode_frame, format_lsn, segment_name
from .policy import FsyncPolicy
from .segments import list_segments
from .tail import WalTail

log = logging.getLogger(__name__)


class WalFailed(Exception):
    """The WAL could not be written; no write can be acknowledged until a restart."""


@dataclass(slots=True)
class _Chunk:
    """Bytes bound for one segment; `creates_segment` when they open a new one."""

    segment_start_lsn: int
    creates_segment: bool
    data: bytearray = field(default_factory=bytearray)


class WalWriter:
    def __init__(
        self,
        wal_dir: Path,
        *,
        timeline: int,
        end_lsn: int,
        segment_size_bytes: int,
        policy: FsyncPolicy,
        interval_s: float,
        on_flushed: Callable[[int], None],  # fsync=always only: a batch became durable
        on_failed: Callable[[BaseException], None],
        follow: bool = False,  # a replica's WAL: segments start only where the primary's did
    ) -> None:
        self._wal_dir = wal_dir
        self._timeline = timeline
        self._segment_size_bytes = segment_size_bytes
        self.policy = policy
        self._interval_s = interval_s
        self._on_flushed = on_flushed
        self._on_failed = on_failed
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-flush")
        self._fd_lock = threading.Lock()  # guards _fd against rotation while another thread fsyncs
        self._fd: int | None = None
        self._pending: list[_Chunk] = []
        self._flush_scheduled = False
        self._sync_waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._unsynced_segments: list[Path] = []  # closed without fsync (fsync=off)
        self._segment_path: Path | None = None
        self.failure: BaseException | None = None
        self.end_lsn = end_lsn  # where the next record goes
        self.write_lsn = end_lsn  # written per the fsync policy: fsynced (always) or in the page cache
        self.flush_lsn = end_lsn  # known fsynced: durable
        self.written_bytes = 0  # since start, for kvstore_wal_written_bytes_total
        self._segment_start_lsn: int | None = None
        self._segment_bytes = 0
        self.recent = WalTail()  # what replication streams read once they have caught up
        self._open_tail(end_lsn, follow)

    @property
    def timeline(self) -> int:
        return self._timeline

    def _open_tail(self, end_lsn: int, follow: bool) -> None:
        segments = list_segments(self._wal_dir)
        if segments and segments[-1].end_lsn == end_lsn and segments[-1].start_lsn < end_lsn:
            last = segments[-1]
            self._fd = os.open(last.path, os.O_WRONLY | os.O_APPEND)
            self._segment_path = last.path
            self._segment_start_lsn = last.start_lsn
            self._segment_bytes = last.size_bytes
            return
        if follow:
            return  # the primary's stream says where the next segment starts (start_segment)
        # No segment ends at end_lsn (a new WAL, or a torn header was cut): start one there.
        header = SegmentHeader(self._timeline, end_lsn).encode()
        self._pending.append(_Chunk(end_lsn, True, bytearray(header)))
        self._segment_start_lsn = end_lsn
        self._segment_bytes = len(header)
        self.end_lsn = end_lsn + len(header)
        self._write_chunks(self._take_pending(), sync=True)
        self.write_lsn = self.flush_lsn = self.end_lsn

    # -- the loop side -------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Queue one record; returns its end LSN (the write's commit LSN)."""
        if self.failure is not None:
            raise WalFailed(f"WAL writes failed earlier: {self.failure}")
        frame = encode_frame(payload)
        if self._rotates_for(len(frame)):
            self._rotate()
        assert self._segment_start_lsn is not None
        if not self._pending:
            self._pending.append(_Chunk(self._segment_start_lsn, False))
        self._pending[-1].data += frame
        self.recent.frame(self.end_lsn, frame)
        self._segment_bytes += len(frame)
        self.end_lsn += len(frame)
        self._after_append()
        return self.end_lsn

    def end_lsn_after(self, payload_bytes: int) -> int:
        """The end LSN `append` would return for a payload of this size appended now: a record
        that states its own commit LSN (an idempotency answer) is built knowing it."""
        frame_bytes = FRAME_HEADER_BYTES + payload_bytes
        start = self.end_lsn + (SEGMENT_HEADER_BYTES if self._rotates_for(frame_bytes) else 0)
        return start + frame_bytes

    def _rotates_for(self, frame_bytes: int) -> bool:
        return self._segment_start_lsn is None or (
            self._segment_bytes + frame_bytes > self._segment_size_bytes and self._segment_bytes > SEGMENT_HEADER_BYTES
        )

    # -- a replica's WAL: the primary's bytes at the primary's LSNs ------------------------

    def start_segment(self, start_lsn: int, timeline: int) -> None:
        """Open a new segment exactly where the primary opened one (byte-identical WALs)."""
        if start_lsn != self.end_lsn:
            raise ValueError(f"segment at {format_lsn(start_lsn)}, but this WAL ends at {format_lsn(self.end_lsn)}")
        self._timeline = timeline
        self._rotate()
        self._after_append()

    def append_frames(self, lsn: int, frames: bytes) -> int:
        """Append whole frames the primary wrote at `lsn`; returns the new end LSN."""
        if self.failure is not None:
            raise WalFailed(f"WAL writes failed earlier: {self.failure}")
        if lsn != self.end_lsn or self._segment_start_lsn is None:
            raise ValueError(f"WAL data at {format_lsn(lsn)}, but this WAL ends at {format_lsn(self.end_lsn)}")
        if not self._pending:
            self._pending.append(_Chunk(self._segment_start_lsn, False))
        self._pending[-1].data += frames
        self._segment_bytes += len(frames)
        self.end_lsn += len(frames)
        self._after_append()
        return self.end_lsn

    @property
    def has_segment(self) -> bool:
        return self._segment_start_lsn is not None

    def start_at(self, lsn: int) -> None:
        """A replica with no WAL of its own (fresh from a base backup, whose snapshot holds
        everything up to `lsn`) is promoted: its WAL begins at `lsn` (switch_timeline next)."""
        if self.has_segment or self._pending or lsn < self.end_lsn:
            raise ValueError(
                f"cannot start the WAL at {format_lsn(lsn)}: it already ends at {format_lsn(self.end_lsn)}"
            )
        self.end_lsn = self.write_lsn = self.flush_lsn = lsn

    @property
    def segment_has_records(self) -> bool:
        return self._segment_start_lsn is not None and self._segment_bytes > SEGMENT_HEADER_BYTES

    def switch_segment(self) -> bool:
        """Close the current segment if it holds records (archive_timeout_s); True if it did."""
        if not self.segment_has_records:
            return False
        self._rotate()
        self._after_append()
        return True

    def switch_timeline(self, timeline: int) -> None:
        """Promotion: the new timeline starts in a new segment at the current end."""
        self._timeline = timeline
        self._rotate()
        self._after_append()

    def _after_append(self) -> None:
        if self.policy is FsyncPolicy.ALWAYS:
            self._schedule_flush()
        else:
            self._write_now()

    def _write_now(self) -> None:
        """interval/off: into the page cache at once; the caller can commit without waiting."""
        try:
            self._write_chunks(self._take_pending(), sync=False)
        except OSError as error:
            self._fail(error)
            raise WalFailed(f"WAL write failed: {error}") from error
        self.write_lsn = self.end_lsn

    def _rotate(self) -> None:
        self.recent.segment(self.end_lsn, self._timeline)
        header = SegmentHeader(self._timeline, self.end_lsn).encode()
        self._pending.append(_Chunk(self.end_lsn, True, bytearray(header)))
        self._segment_start_lsn = self.end_lsn
        self._segment_bytes = len(header)
        self.end_lsn += len(header)

    def _take_pending(self) -> list[_Chunk]:
        chunks, self._pending = self._pending, []
        return chunks

    def _schedule_flush(self) -> None:
        if self._flush_scheduled:
            return
        self._flush_scheduled = True
        # call_soon, not now: every record appended in this loop turn joins the batch.
        self._loop.call_soon(self._start_threaded_flush)

    def _start_threaded_flush(self) -> None:
        target_lsn = self.end_lsn
        chunks = self._take_pending()
        future = self._loop.run_in_executor(self._executor, self._write_chunks, chunks, True)
        future.add_done_callback(lambda done: self._flush_done(done, target_lsn))

    def _flush_done(self, done: asyncio.Future[None], target_lsn: int) -> None:
        error = done.exception()
        if error is not None:
            self._fail(error)
            return
        self.write_lsn = self.flush_lsn = target_lsn
        try:
            self._on_flushed(target_lsn)
        except Exception as callback_error:  # a bug above us: stop writes loudly, never hang them
            self._fail(callback_error)
            return
        self._release_sync_waiters()
        self._flush_scheduled = False
        if self._pending:
            self._schedule_flush()

    def _release_sync_waiters(self) -> None:
        while self._sync_waiters and self._sync_waiters[0][0] <= self.write_lsn:
            future = self._sync_waiters.popleft()[1]
            if not future.done():
                future.set_result(None)

    def _fail(self, error: BaseException) -> None:
        log.critical("WAL write failed; refusing all writes until restart", exc_info=error)
        self.failure = error
        self._pending.clear()
        self._on_failed(error)
        while self._sync_waiters:
            future = self._sync_waiters.popleft()[1]
            if not future.done():
                future.set_exception(WalFailed(f"WAL write failed: {error}"))

    async def sync(self) -> int:
        """Make everything appended so far durable, whatever the policy; returns that LSN.

        Waits for that LSN, not for the writer to go idle: under steady load it never does.
        """
        if self.failure is not None:
            raise WalFailed(f"WAL writes failed earlier: {self.failure}")
        target_lsn = self.end_lsn
        if self.write_lsn < target_lsn:  # fsync=always: a flush in flight will cover it
            future: asyncio.Future[None] = self._loop.create_future()
            self._sync_waiters.append((target_lsn, future))
            await future
        if self.flush_lsn < target_lsn:
            try:
                await self._loop.run_in_executor(self._executor, self._fsync_written)
            except OSError as error:
                self._fail(error)
                raise WalFailed(f"WAL fsync failed: {error}") from error
            self.flush_lsn = max(self.flush_lsn, target_lsn)
        return target_lsn

    async def run_interval_sync(self) -> None:
        """fsync=interval: the background task that bounds what an OS crash can lose."""
        while True:
            await asyncio.sleep(self._interval_s)
            if self.failure is None and self.flush_lsn < self.write_lsn:
                try:
                    await self.sync()
                except (OSError, WalFailed) as error:
                    if self.failure is None:
                        self._fail(error)

    async def close(self) -> None:
        if self.failure is None:
            await self.sync()
        with self._fd_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        self._executor.shutdown(wait=True)

    # -- the disk side (flush thread, or the loop for interval/off) -----------------

    def _write_chunks(self, chunks: list[_Chunk], sync: bool) -> None:
        for chunk in chunks:
            if chunk.creates_segment:
                self._open_new_segment(chunk.segment_start_lsn)
            assert self._fd is not None
            view = memoryview(chunk.data)
            while view:
                written = os.write(self._fd, view)
                self.written_bytes += written
                view = view[written:]
        if sync:
            self._fsync_written()

    def _open_new_segment(self, start_lsn: int) -> None:
        path = self._wal_dir / segment_name(start_lsn)
        with self._fd_lock:
            if self._fd is not None:
                if self.policy is FsyncPolicy.OFF and self._segment_path is not None:
                    self._unsynced_segments.append(self._segment_path)
                else:
                    self._timed_fsync(self._fd)
                os.close(self._fd)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            self._segment_path = path
        if self.policy is not FsyncPolicy.OFF:
            fsync_dir(self._wal_dir)
        log.info("WAL segment started", extra={"segment": path.name, "lsn": format_lsn(start_lsn)})

    def _fsync_written(self) -> None:
        """fsync what `sync` promises: segments closed unsynced, the directory, the current one."""
        with self._fd_lock:
            closed, self._unsynced_segments = self._unsynced_segments, []
            for path in closed:
                if path.exists():  # a checkpoint may have recycled it already
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        self._timed_fsync(fd)
                    finally:
                        os.close(fd)
            if closed:
                fsync_dir(self._wal_dir)
            if self._fd is not None:
                self._timed_fsync(self._fd)

    @staticmethod
    def _timed_fsync(fd: int) -> None:
        started = time.perf_counter()
        os.fsync(fd)
        metrics.WAL_FSYNC_SECONDS.observe(time.perf_counter() - started)
