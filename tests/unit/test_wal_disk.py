"""WAL files on disk: writing, rotation, scanning, torn tails and corruption."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kvstore.node import records
from kvstore.node.wal.format import FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES, encode_frame
from kvstore.node.wal.policy import FsyncPolicy
from kvstore.node.wal.reader import WalCorruption, WalScan
from kvstore.node.wal.segments import list_segments, recycle_segments, repair_torn_tail
from kvstore.node.wal.writer import WalWriter


def write_wal(wal_dir: Path, count: int, segment_size_bytes: int = 1 << 20, start_lsn: int = 0) -> list[int]:
    """Append `count` SET records through the real writer; returns their end LSNs."""

    async def run() -> list[int]:
        flushed: list[int] = []
        writer = WalWriter(
            wal_dir,
            timeline=1,
            end_lsn=start_lsn,
            segment_size_bytes=segment_size_bytes,
            policy=FsyncPolicy.ALWAYS,
            interval_s=1.0,
            on_flushed=flushed.append,
            on_failed=lambda error: None,
        )
        ends = [
            writer.append(records.encode(records.set_record(f"k{i}", b"v" * 40, i + 1, 0, 0))) for i in range(count)
        ]
        await writer.sync()
        await writer.close()
        assert flushed and flushed[-1] == ends[-1]
        return ends

    wal_dir.mkdir(exist_ok=True)
    return asyncio.run(run())


def scan_all(wal_dir: Path, from_lsn: int | None = None) -> tuple[WalScan, list[str]]:
    scan = WalScan(wal_dir, records.decode, from_lsn=from_lsn)
    return scan, [item.record[1] for item in scan]


def test_records_come_back_in_order_across_rotated_segments(tmp_path: Path) -> None:
    ends = write_wal(tmp_path, 500, segment_size_bytes=4096)
    segments = list_segments(tmp_path)
    assert len(segments) >= 5
    for before, after in zip(segments, segments[1:]):
        assert before.end_lsn == after.start_lsn  # one continuous LSN stream
        assert before.size_bytes <= 4096  # a record never spans two segments
    scan, keys = scan_all(tmp_path)
    assert keys == [f"k{i}" for i in range(500)]
    assert scan.end_lsn == ends[-1] and scan.torn_tail is None


def test_scan_from_a_middle_lsn(tmp_path: Path) -> None:
    ends = write_wal(tmp_path, 50, segment_size_bytes=4096)
    _, keys = scan_all(tmp_path, from_lsn=ends[29])
    assert keys == [f"k{i}" for i in range(30, 50)]


def test_partial_record_at_the_end_is_a_torn_tail_cut_with_a_copy(tmp_path: Path) -> None:
    ends = write_wal(tmp_path, 10)
    last = list_segments(tmp_path)[-1]
    partial = encode_frame(records.encode(records.set_record("torn", b"x" * 100, 99, 0, 0)))[:37]
    with open(last.path, "ab") as file:
        file.write(partial)
    scan, keys = scan_all(tmp_path)
    assert len(keys) == 10
    assert scan.torn_tail is not None and scan.torn_tail.lsn == ends[-1] and scan.torn_tail.cut_bytes == 37
    copy = repair_torn_tail(scan.torn_tail)
    assert copy.read_bytes() == partial
    assert last.path.stat().st_size == ends[-1] - last.start_lsn
    scan, keys = scan_all(tmp_path)
    assert len(keys) == 10 and scan.torn_tail is None


def test_damaged_last_record_with_nothing_after_is_a_torn_tail(tmp_path: Path) -> None:
    ends = write_wal(tmp_path, 10)
    last = list_segments(tmp_path)[-1]
    data = bytearray(last.path.read_bytes())
    data[-3] ^= 0xFF
    last.path.write_bytes(bytes(data))
    scan, keys = scan_all(tmp_path)
    assert len(keys) == 9
    assert scan.torn_tail is not None and scan.torn_tail.lsn == ends[-2]
    assert "checksum" in scan.torn_tail.reason


def test_damaged_record_with_valid_records_after_is_corruption_named_by_file_and_lsn(tmp_path: Path) -> None:
    ends = write_wal(tmp_path, 10)
    last = list_segments(tmp_path)[-1]
    data = bytearray(last.path.read_bytes())
    victim_lsn = ends[3]  # the 5th record starts where the 4th ends
    data[victim_lsn - last.start_lsn + FRAME_HEADER_BYTES + 2] ^= 0x01
    last.path.write_bytes(bytes(data))
    with pytest.raises(WalCorruption) as caught:
        scan_all(tmp_path)
    assert caught.value.lsn == victim_lsn
    assert caught.value.path == last.path
    assert last.path.name in str(caught.value) and "0/" in str(caught.value)


def test_damage_in_a_segment_that_is_not_the_last_is_corruption(tmp_path: Path) -> None:
    write_wal(tmp_path, 200, segment_size_bytes=4096)
    first = list_segments(tmp_path)[0]
    data = bytearray(first.path.read_bytes())
    data[-5] ^= 0x01  # inside the final record of the first segment
    first.path.write_bytes(bytes(data))
    with pytest.raises(WalCorruption) as caught:
        scan_all(tmp_path)
    assert caught.value.path == first.path


def test_a_missing_segment_is_corruption(tmp_path: Path) -> None:
    write_wal(tmp_path, 500, segment_size_bytes=4096)
    list_segments(tmp_path)[2].path.unlink()
    with pytest.raises(WalCorruption, match="missing WAL"):
        scan_all(tmp_path)


def test_bad_segment_header_is_corruption(tmp_path: Path) -> None:
    write_wal(tmp_path, 200, segment_size_bytes=4096)
    second = list_segments(tmp_path)[1]
    data = bytearray(second.path.read_bytes())
    data[0:4] = b"JUNK"
    second.path.write_bytes(bytes(data))
    with pytest.raises(WalCorruption, match="magic"):
        scan_all(tmp_path)


def test_segment_with_a_partial_header_at_the_end_is_torn_and_removed(tmp_path: Path) -> None:
    ends = write_wal(tmp_path, 5)
    stub = tmp_path / f"{ends[-1]:016X}.wal"
    stub.write_bytes(b"KVWL\x01")
    scan, keys = scan_all(tmp_path)
    assert len(keys) == 5 and scan.torn_tail is not None
    repair_torn_tail(scan.torn_tail)
    assert not stub.exists()
    # The writer then goes on appending to the previous segment, which ends there.
    more = write_wal(tmp_path, 3, start_lsn=ends[-1])
    assert more[0] == ends[-1] + (ends[0] - SEGMENT_HEADER_BYTES)
    assert len(list_segments(tmp_path)) == 1
    _, keys = scan_all(tmp_path)
    assert len(keys) == 8


def test_recycling_keeps_the_segment_holding_the_redo_lsn(tmp_path: Path) -> None:
    ends = write_wal(tmp_path, 200, segment_size_bytes=4096)
    redo = ends[120]
    removed = recycle_segments(tmp_path, redo)
    assert removed
    _, keys = scan_all(tmp_path, from_lsn=redo)
    assert keys == [f"k{i}" for i in range(121, 200)]
    with pytest.raises(WalCorruption, match="removed"):
        scan_all(tmp_path, from_lsn=0)
