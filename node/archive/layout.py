"""What an archive holds and how its objects are named: one module that the archiver (writes),
restore and `kvctl backup list|verify` (read) agree on.

    archive.json                                   who the archive belongs to (written once)
    wal/<TL>-<START>-<END>                         one WAL segment: its file's bytes, segment
                                                   header included, LSNs [START, END) on timeline TL
    timelines/<TL>.history                         how timeline TL branched off (the node's file)
    snapshots/<TL>-<REDO>/snapshot.chk, manifest.json   (snapshots.py)

Numbers are fixed-width upper-case hex (timelines 8 digits, LSNs 16), so names sort by
timeline, then LSN. A segment's name says where it ends, so a listing alone shows the WAL's
coverage and gaps. Two objects may share a timeline and start (a new primary's copy of the
last segment of its parent's timeline ends at the switch; the old primary's may go further):
both hold the same bytes up to the shorter one's end.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson

ARCHIVE_FORMAT = 1
ARCHIVE_INFO = "archive.json"
WAL = "wal"
TIMELINES = "timelines"

_SEGMENT = re.compile(r"^wal/([0-9A-F]{8})-([0-9A-F]{16})-([0-9A-F]{16})$")
_HISTORY = re.compile(r"^timelines/([0-9A-F]{8})\.history$")


@dataclass(frozen=True, slots=True, order=True)
class SegmentObject:
    timeline: int
    start_lsn: int
    end_lsn: int

    @property
    def name(self) -> str:
        return f"{WAL}/{self.timeline:08X}-{self.start_lsn:016X}-{self.end_lsn:016X}"

    @property
    def size(self) -> int:
        return self.end_lsn - self.start_lsn


def parse_segment(name: str) -> SegmentObject | None:
    match = _SEGMENT.match(name)
    if match is None:
        return None
    timeline, start, end = (int(group, 16) for group in match.groups())
    return SegmentObject(timeline, start, end) if end > start else None


def holds_data(name: str) -> bool:
    """WAL segments and snapshots hold the data (encrypted when there is a key); the rest is
    LSNs, sizes and digests, readable without it."""
    return name.startswith(f"{WAL}/") or name.endswith("/snapshot.chk")


def history_name(timeline: int) -> str:
    return f"{TIMELINES}/{timeline:08X}.history"


def parse_history_name(name: str) -> int | None:
    match = _HISTORY.match(name)
    return None if match is None else int(match.group(1), 16)


@dataclass(frozen=True, slots=True)
class ArchiveInfo:
    """`archive.json`: the first archiver to use a location writes it; every later one (and
    restore) checks it, so two clusters never mix their WAL in one place."""

    format_version: int
    system_identifier: str  # a string: JSON readers lose 64-bit integers
    key_id: str | None  # the encryption key's id (crypto.py), None when objects are plain
    created_at: str

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)

    @classmethod
    def decode(cls, data: bytes) -> ArchiveInfo:
        document: Any = orjson.loads(data)
        return cls(**document)

    @classmethod
    def new(cls, system_identifier: int, key_id: str | None) -> ArchiveInfo:
        return cls(ARCHIVE_FORMAT, str(system_identifier), key_id, utc_iso(time.time()))


def utc_iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
