"""The WAL directory's segment files, in one place: list and find them, read raw frames
from them, recycle old ones, cut a torn tail, rewind past a branch point.

Everything here works on whole segment files and byte positions; it never decodes a
record (reader.py scans records, format.py is the codec).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..fsutil import fsync_dir, private_dirs
from .format import SEGMENT_HEADER_BYTES, SegmentHeader, format_lsn, frame_size, parse_segment_name, whole_frames
from .tail import TailEntry, TailRead

log = logging.getLogger(__name__)


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


def list_segments(wal_dir: Path) -> list[Segment]:
    found = []
    for entry in os.scandir(wal_dir):
        start = parse_segment_name(entry.name)
        if start is not None and entry.is_file():
            found.append(Segment(start, Path(entry.path), entry.stat().st_size))
    found.sort(key=lambda segment: segment.start_lsn)
    return found


def segment_holding(segments: list[Segment], lsn: int) -> Segment | None:
    """The segment holding `lsn`; at a boundary, the one that starts there."""
    for segment in reversed(segments):
        if segment.start_lsn <= lsn:
            return segment if lsn <= segment.end_lsn else None
    return None


def read_frames(wal_dir: Path, position: int, limit: int, max_bytes: int) -> TailRead:
    """Whole frames from `position` (a record or segment boundary) toward `limit`, at most
    `max_bytes` of them (one larger record comes alone), from one segment file: what the
    live tail (tail.py) answers from memory, read from disk. Raises FileNotFoundError when
    the WAL at `position` was recycled. Blocking: run it in a thread."""
    segments = list_segments(wal_dir)
    segment = segment_holding(segments, position)
    if segment is None or (position == segment.end_lsn and segment is not segments[-1]):
        following = [s for s in segments if s.start_lsn == position]
        if not following:
            raise FileNotFoundError(f"no WAL segment holds {format_lsn(position)}")
        segment = following[0]
    start: TailEntry | None = None
    frames = b""
    with open(segment.path, "rb") as file:
        if position == segment.start_lsn:
            header = SegmentHeader.decode(file.read(SEGMENT_HEADER_BYTES))
            start = TailEntry(segment.start_lsn, None, header.timeline)
            position += SEGMENT_HEADER_BYTES
        end = min(limit, segment.start_lsn + os.fstat(file.fileno()).st_size)
        if position < end:
            file.seek(position - segment.start_lsn)
            data = file.read(min(max_bytes, end - position))
            whole = whole_frames(data)
            if whole == 0:  # one record larger than max_bytes: send it alone
                data += file.read(frame_size(data) - len(data))
                whole = len(data)
            frames = data[:whole]
            position += whole
    return TailRead(start, frames, position)


def recycle_segments(wal_dir: Path, keep_from_lsn: int) -> list[Path]:
    """Remove segments that hold nothing at or after `keep_from_lsn` (never the last one)."""
    segments = list_segments(wal_dir)
    removed = []
    for segment, following in zip(segments, segments[1:]):
        if following.start_lsn <= keep_from_lsn:
            segment.path.unlink()
            removed.append(segment.path)
    if removed:
        fsync_dir(wal_dir)
    return removed


def remove_all_segments(wal_dir: Path) -> list[Segment]:
    """Remove every segment (a replica's WAL that its snapshot already holds); returns them."""
    segments = list_segments(wal_dir)
    for segment in segments:
        segment.path.unlink()
    if segments:
        fsync_dir(wal_dir)
    return segments


def repair_torn_tail(torn: TornTail) -> Path:
    """Cut the torn tail off the last segment, keeping the cut bytes in a `.broken` file."""
    segment = torn.segment
    cut_at = torn.lsn - segment.start_lsn
    broken_path = segment.path.with_name(f"{segment.path.name}.{torn.lsn:016X}.broken")
    cut = _copy_from(segment.path, cut_at, broken_path)
    if cut_at < SEGMENT_HEADER_BYTES:
        segment.path.unlink()  # not even a header survived: the writer recreates the segment
    else:
        _truncate(segment.path, cut_at)
    fsync_dir(segment.path.parent)
    log.warning(
        "torn WAL tail cut",
        extra={
            "segment": str(segment.path),
            "lsn": format_lsn(torn.lsn),
            "bytes_cut": cut,
            "reason": torn.reason,
            "copy": str(broken_path),
        },
    )
    return broken_path


def rewind(wal_dir: Path, switch_lsn: int, keep_dir: Path) -> int:
    """Move the WAL beyond `switch_lsn` into `keep_dir` and cut it there (pg_rewind's job for
    the WAL); returns the bytes moved."""
    private_dirs(keep_dir)
    moved = 0
    for segment in list_segments(wal_dir):
        if segment.start_lsn >= switch_lsn:
            shutil.move(segment.path, keep_dir / segment.path.name)
            moved += segment.size_bytes
        elif segment.end_lsn > switch_lsn:
            cut_at = switch_lsn - segment.start_lsn
            moved += _copy_from(segment.path, cut_at, keep_dir / f"{segment.path.name}.tail")
            _truncate(segment.path, cut_at)
    fsync_dir(keep_dir)
    fsync_dir(wal_dir)
    return moved


def _copy_from(path: Path, offset: int, copy_path: Path) -> int:
    """Copy `path` from `offset` on into `copy_path`, durably; returns the bytes copied."""
    with open(path, "rb") as source, open(copy_path, "wb") as copy:
        source.seek(offset)
        data = source.read()
        copy.write(data)
        copy.flush()
        os.fsync(copy.fileno())
    return len(data)


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as target:
        target.truncate(size)
        os.fsync(target.fileno())
