"""The in-memory WAL tail that replication streams read when they have caught up."""

from __future__ import annotations

import tracemalloc

from kvstore.node.wal.format import SEGMENT_HEADER_BYTES
from kvstore.node.wal.tail import WalTail


def filled(max_bytes: int = 1 << 20) -> tuple[WalTail, list[int]]:
    tail = WalTail(max_bytes)
    tail.segment(0, 1)
    lsns, position = [], SEGMENT_HEADER_BYTES
    for n in range(10):
        frame = bytes([n]) * 100
        tail.frame(position, frame)
        lsns.append(position)
        position += len(frame)
    tail.segment(position, 2)
    tail.frame(position + SEGMENT_HEADER_BYTES, b"x" * 50)
    return tail, [*lsns, position]


def test_reads_whole_frames_up_to_the_limit_and_stops_at_a_segment() -> None:
    tail, lsns = filled()
    start = tail.read(0, 10_000, 1 << 20)
    assert start is not None and start.segment_start is not None and start.segment_start.timeline == 1
    assert len(start.frames) == 1000 and start.end_lsn == lsns[-1]  # stops before the next segment
    limited = tail.read(lsns[2], lsns[5], 1 << 20)
    assert limited is not None and limited.frames == bytes([2]) * 100 + bytes([3]) * 100 + bytes([4]) * 100
    batch = tail.read(lsns[0], 10_000, 250)
    assert batch is not None and len(batch.frames) == 200 and batch.end_lsn == lsns[2]
    following = tail.read(lsns[-1], 10_000, 1 << 20)
    assert following is not None and following.segment_start is not None and following.frames == b"x" * 50


def test_positions_not_in_memory_read_from_disk() -> None:
    tail, lsns = filled(max_bytes=500)
    assert tail.read(0, 10_000, 1 << 20) is None  # dropped from the window
    assert tail.read(lsns[3] + 1, 10_000, 1 << 20) is None  # not a record boundary
    kept = tail.read(lsns[-1], 10_000, 1 << 20)
    assert kept is not None and kept.frames == b"x" * 50


def test_frames_that_leave_the_window_are_freed() -> None:
    tracemalloc.start()
    try:
        tail = WalTail(4 << 20)
        tail.segment(0, 1)
        position = SEGMENT_HEADER_BYTES
        for _ in range(64):  # 64 MiB through a 4 MiB window
            frame = bytes(1 << 20)
            tail.frame(position, frame)
            position += len(frame)
        del frame
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 8 << 20
