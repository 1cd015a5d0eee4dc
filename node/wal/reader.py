"""Reading the WAL from disk: scanning its records from an LSN, telling a torn tail from corruption.

A scan tells two endings apart, as LevelDB's and etcd's readers do:
- a torn tail: the last segment ends in a partial or damaged record and nothing valid
  follows it. That is the normal end of a WAL after a crash; `segments.repair_torn_tail`
  cuts it, keeping a `.broken` copy of the cut bytes.
- corruption: a damaged record with valid records after it, a damaged record in a
  segment that is not the last, a gap between segments, or a bad header. Scanning
  raises `WalCorruption` naming the file and LSN; nothing is ever skipped.

The scan knows frames, not records: it is given the codec (`decode`, which raises
ValueError on a payload that is no record), so the WAL layer stays below the records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, NamedTuple, TypeVar

from .format import (
    FRAME_HEADER_BYTES,
    NEED_DATA,
    SEGMENT_HEADER_BYTES,
    CorruptFrame,
    Frame,
    FrameDecoder,
    SegmentHeader,
    WalFormatError,
    format_lsn,
    intact_payload,
)
from .segments import Segment, TornTail, list_segments

R = TypeVar("R")

READ_CHUNK_BYTES = 1024 * 1024


class WalCorruption(Exception):
    """Damage in the middle of the WAL: the node must not start on it."""

    def __init__(self, path: Path, lsn: int, reason: str) -> None:
        super().__init__(f"WAL corruption in {path} at LSN {format_lsn(lsn)}: {reason}")
        self.path = path
        self.lsn = lsn
        self.reason = reason


class WalRecord(NamedTuple, Generic[R]):  # one per record replayed: cheap to build
    lsn: int
    end_lsn: int
    record: R
    segment: Segment


class WalScan(Generic[R]):
    """Iterate the records (payloads decoded by `decode`) from `from_lsn` to the end of the WAL.

    After iteration, `end_lsn` is where the valid WAL ends and `torn_tail` says what
    (if anything) lies beyond it in the last segment. With `until_lsn` the scan stops
    there: a live node's WAL may hold a record being written past that point.
    """

    def __init__(
        self,
        wal_dir: Path,
        decode: Callable[[bytes], R],
        from_lsn: int | None = None,
        until_lsn: int | None = None,
    ) -> None:
        self.wal_dir = wal_dir
        self.decode = decode
        self.segments = list_segments(wal_dir)
        self.from_lsn = from_lsn
        self.until_lsn = until_lsn
        self.end_lsn: int | None = None
        self.torn_tail: TornTail | None = None
        self.last_timeline: int | None = None

    def __iter__(self) -> Iterator[WalRecord[R]]:
        segments = self._segments_from_start()
        for index, segment in enumerate(segments):
            if self.until_lsn is not None and segment.start_lsn >= self.until_lsn:
                return
            is_last = index == len(segments) - 1
            if index > 0 and segments[index - 1].end_lsn != segment.start_lsn:
                raise WalCorruption(
                    segment.path,
                    segments[index - 1].end_lsn,
                    f"missing WAL: previous segment ends at {format_lsn(segments[index - 1].end_lsn)}",
                )
            yield from self._scan_segment(segment, is_last)

    def _segments_from_start(self) -> list[Segment]:
        if not self.segments:
            raise WalCorruption(self.wal_dir, self.from_lsn or 0, "no WAL segments found")
        if self.from_lsn is None:
            return self.segments
        for index in range(len(self.segments) - 1, -1, -1):
            if self.segments[index].start_lsn <= self.from_lsn:
                segment = self.segments[index]
                if self.from_lsn > segment.end_lsn:
                    raise WalCorruption(segment.path, self.from_lsn, "WAL ends before the requested LSN")
                return self.segments[index:]
        raise WalCorruption(self.segments[0].path, self.from_lsn, "the segment holding this LSN has been removed")

    def _scan_segment(self, segment: Segment, is_last: bool) -> Iterator[WalRecord[R]]:
        with open(segment.path, "rb") as file:
            head = file.read(SEGMENT_HEADER_BYTES)
            if len(head) < SEGMENT_HEADER_BYTES and is_last:
                self._end(TornTail(segment, segment.start_lsn, "segment header is incomplete"))
                return
            try:
                header = SegmentHeader.decode(head)
            except WalFormatError as exc:
                raise WalCorruption(segment.path, segment.start_lsn, str(exc)) from None
            if header.start_lsn != segment.start_lsn:
                raise WalCorruption(
                    segment.path, segment.start_lsn, f"header says start LSN {format_lsn(header.start_lsn)}"
                )
            self.last_timeline = header.timeline
            start = segment.start_lsn + SEGMENT_HEADER_BYTES
            if self.from_lsn is not None and self.from_lsn > start:
                start = self.from_lsn
                file.seek(start - segment.start_lsn)
            decoder = FrameDecoder(start)
            while True:
                if self.until_lsn is not None and decoder.lsn >= self.until_lsn:
                    self.end_lsn = decoder.lsn
                    return
                item = decoder.next_frame()
                if isinstance(item, Frame):
                    try:
                        record = self.decode(item.payload)
                    except ValueError as exc:
                        raise WalCorruption(segment.path, item.lsn, str(exc)) from None
                    yield WalRecord(item.lsn, item.end_lsn, record, segment)
                    continue
                if item is NEED_DATA:
                    chunk = file.read(READ_CHUNK_BYTES)
                    if chunk:
                        decoder.feed(chunk)
                        continue
                    if decoder.buffered_bytes == 0:
                        self.end_lsn = decoder.lsn
                        return
                    if not is_last:
                        raise WalCorruption(segment.path, decoder.lsn, "segment ends inside a record")
                    self._end(TornTail(segment, decoder.lsn, "incomplete record at end of WAL"))
                    return
                assert isinstance(item, CorruptFrame)
                if not is_last:
                    raise WalCorruption(segment.path, item.lsn, item.reason)
                later = _find_valid_frame_after(segment, item.lsn, self.decode)
                if later is not None:
                    raise WalCorruption(
                        segment.path, item.lsn, f"{item.reason}; a valid record follows at {format_lsn(later)}"
                    )
                self._end(TornTail(segment, item.lsn, item.reason))
                return

    def _end(self, torn: TornTail) -> None:
        self.end_lsn = torn.lsn
        self.torn_tail = torn


def _find_valid_frame_after(segment: Segment, bad_lsn: int, decode: Callable[[bytes], object]) -> int | None:
    """The LSN of any intact frame after a damaged one, or None (a torn tail)."""
    data = segment.path.read_bytes()
    for offset in range(bad_lsn - segment.start_lsn + 1, len(data) - FRAME_HEADER_BYTES + 1):
        payload = intact_payload(data, offset)
        if payload is not None:
            try:
                decode(payload)
                return segment.start_lsn + offset
            except ValueError:
                pass  # checksum matched by chance on garbage: keep looking
    return None
