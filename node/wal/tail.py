"""The newest WAL, kept in memory for replication streams (the live tail).

The writer records every frame and segment start it appends; a stream that has caught
up reads from here instead of opening segment files. The window is bounded by bytes:
a stream that falls behind it reads from disk until it catches up again. Only what
is committed may be sent, so readers pass the committed LSN as their limit.
"""

from __future__ import annotations

import bisect
from typing import Final, NamedTuple

from ..wal.format import SEGMENT_HEADER_BYTES

DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024


class TailEntry(NamedTuple):
    lsn: int
    data: bytes | None  # a frame, or None for a segment start (its header is not kept)
    timeline: int


class TailRead(NamedTuple):
    segment_start: TailEntry | None  # a segment starts at the position read from
    frames: bytes
    end_lsn: int


class WalTail:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        # Lists with a moving head (not deques): bisect needs cheap indexing.
        self._entries: list[TailEntry] = []
        self._lsns: list[int] = []
        self._head = 0
        self._bytes = 0
        self._max_bytes = max_bytes

    def segment(self, start_lsn: int, timeline: int) -> None:
        self._add(TailEntry(start_lsn, None, timeline), SEGMENT_HEADER_BYTES)

    def frame(self, lsn: int, frame: bytes) -> None:
        self._add(TailEntry(lsn, frame, 0), len(frame))

    def _add(self, entry: TailEntry, size: int) -> None:
        self._entries.append(entry)
        self._lsns.append(entry.lsn)
        self._bytes += size
        while self._bytes > self._max_bytes and len(self._entries) - self._head > 1:
            old = self._entries[self._head]
            # Drop the frame now, not when the list is next compacted: 4096 large frames would
            # keep gigabytes the window no longer counts. Nothing reads below the head.
            self._entries[self._head] = old._replace(data=b"")
            self._head += 1
            self._bytes -= SEGMENT_HEADER_BYTES if old.data is None else len(old.data)
        if self._head > 4096 and self._head * 2 > len(self._entries):
            del self._entries[: self._head], self._lsns[: self._head]
            self._head = 0

    def read(self, position: int, limit: int, max_bytes: int) -> TailRead | None:
        """Frames from `position` (an entry's LSN) up to `limit`; None when it is not in memory."""
        index = bisect.bisect_left(self._lsns, position, lo=self._head)
        if index >= len(self._entries) or self._entries[index].lsn != position:
            return None
        entries = self._entries
        start = entries[index] if entries[index].data is None else None
        if start is not None:
            index += 1
        chunks: list[bytes] = []
        size = 0
        end = position + SEGMENT_HEADER_BYTES if start is not None else position
        while index < len(entries):
            entry = entries[index]
            if entry.data is None or entry.lsn != end or entry.lsn + len(entry.data) > limit:
                break  # the next segment is the next read; nothing past the committed LSN
            if chunks and size + len(entry.data) > max_bytes:
                break
            chunks.append(entry.data)
            size += len(entry.data)
            end = entry.lsn + len(entry.data)
            index += 1
        return TailRead(start, b"".join(chunks), end)
