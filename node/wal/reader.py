"""Reading the WAL from disk: segment listing, scanning from an LSN, torn-tail repair.

A scan tells two endings apart, as LevelDB's and etcd's readers do:
- a torn tail: the last segment ends in a partial or damaged record and nothing valid
  follows it. That is the normal end of a WAL after a crash; `repair_torn_tail` cuts
  it, keeping a `.broken` copy of the cut bytes.
- corruption: a damaged record with valid records after it, a damaged record in a
  segment that is not the last, a gap between segments, or a bad header. Scanning
  raises `WalCorruption` naming the file and LSN; nothing is ever skipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from .. import records
from ..fsutil import fsync_dir
from .format import (
    FRAME_HEADER,
    FRAME_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    NEED_DATA,
    SEGMENT_HEADER_BYTES,
    CorruptFrame,
    Frame,
    FrameDecoder,
    SegmentHeader,
    WalFormatError,
    crc32c,
    format_lsn,
    parse_segment_name,
)

log = logging.getLogger(__name__)

READ_CHUNK_BYTES = 1024 * 1024


class WalCorruption(Exception):
    """Damage in the middle of the WAL: the node must not start on it."""

    def __init__(self, path: Path, lsn: int, reason: str) -> None:
        super().__init__(f"WAL corruption in {path} at LSN {format_lsn(lsn)}: {reason}")
        self.path = path
        self.lsn = lsn
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Segment:
    start_lsn: int
    path: Path
    size_bytes: int

    @property
    def end_lsn(self) -> int:
        return self.start_lsn + self.size_bytes


@dataclass(frozen=True, slots=True)
class TornTail:
    segment: Segment
    lsn: int  # where the valid WAL ends and the cut begins
    reason: str

    @property
    def cut_bytes(self) -> int:
        return self.segment.end_lsn - self.lsn


class WalRecord(NamedTuple):  # one per record replayed: cheap to build
    lsn: int
    end_lsn: int
    record: records.Record
    segment: Segment


def list_segments(wal_dir: Path) -> list[Segment]:
    found = []
    for entry in os.scandir(wal_dir):
        start = parse_segment_name(entry.name)
        if start is not None and entry.is_file():
            found.append(Segment(start, Path(entry.path), entry.stat().st_size))
    found.sort(key=lambda segment: segment.start_lsn)
    return found


class WalScan:
    """Iterate the records from `from_lsn` to the end of the WAL.

    After iteration, `end_lsn` is where the valid WAL ends and `torn_tail` says what
    (if anything) lies beyond it in the last segment. With `until_lsn` the scan stops
    there: a live node's WAL may hold a record being written past that point.
    """

    def __init__(self, wal_dir: Path, from_lsn: int | None = None, until_lsn: int | None = None) -> None:
        self.wal_dir = wal_dir
        self.segments = list_segments(wal_dir)
        self.from_lsn = from_lsn
        self.until_lsn = until_lsn
        self.end_lsn: int | None = None
        self.torn_tail: TornTail | None = None
        self.last_timeline: int | None = None

    def __iter__(self) -> Iterator[WalRecord]:
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

    def _scan_segment(self, segment: Segment, is_last: bool) -> Iterator[WalRecord]:
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
                        record = records.decode(item.payload)
                    except records.RecordFormatError as exc:
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
                later = _find_valid_frame_after(segment, item.lsn)
                if later is not None:
                    raise WalCorruption(
                        segment.path, item.lsn, f"{item.reason}; a valid record follows at {format_lsn(later)}"
                    )
                self._end(TornTail(segment, item.lsn, item.reason))
                return

    def _end(self, torn: TornTail) -> None:
        self.end_lsn = torn.lsn
        self.torn_tail = torn


def _find_valid_frame_after(segment: Segment, bad_lsn: int) -> int | None:
    """The LSN of any intact frame after a damaged one, or None (a torn tail)."""
    data = segment.path.read_bytes()
    offset = bad_lsn - segment.start_lsn + 1
    limit = len(data) - FRAME_HEADER_BYTES
    while offset <= limit:
        size, stored_crc = FRAME_HEADER.unpack_from(data, offset)
        end = offset + FRAME_HEADER_BYTES + size
        if 0 < size <= MAX_PAYLOAD_BYTES and end <= len(data):
            payload = data[offset + FRAME_HEADER_BYTES : end]
            if crc32c(payload) == stored_crc:
                try:
                    records.decode(payload)
                    return segment.start_lsn + offset
                except records.RecordFormatError:
                    pass  # checksum matched by chance on garbage: keep looking
        offset += 1
    return None


def repair_torn_tail(torn: TornTail) -> Path:
    """Cut the torn tail off the last segment, keeping the cut bytes in a `.broken` file."""
    segment = torn.segment
    cut_at = torn.lsn - segment.start_lsn
    broken_path = segment.path.with_name(f"{segment.path.name}.{torn.lsn:016X}.broken")
    with open(segment.path, "rb") as source:
        source.seek(cut_at)
        cut = source.read()
    with open(broken_path, "wb") as copy:
        copy.write(cut)
        copy.flush()
        os.fsync(copy.fileno())
    if cut_at < SEGMENT_HEADER_BYTES:
        segment.path.unlink()  # not even a header survived: the writer recreates the segment
    else:
        with open(segment.path, "r+b") as target:
            target.truncate(cut_at)
            os.fsync(target.fileno())
    fsync_dir(segment.path.parent)
    log.warning(
        "torn WAL tail cut",
        extra={
            "segment": str(segment.path),
            "lsn": format_lsn(torn.lsn),
            "bytes_cut": len(cut),
            "reason": torn.reason,
            "copy": str(broken_path),
        },
    )
    return broken_path
