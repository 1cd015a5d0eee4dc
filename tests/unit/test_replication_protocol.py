"""The replication stream decoder: whole, byte by byte, any split, trailing data, damage."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.node import records
from kvstore.node.wal.format import encode_frame
from kvstore.replication.protocol import (
    Keepalive,
    SegmentStart,
    StreamDecoder,
    StreamEnd,
    StreamError,
    WalData,
    encode_end,
    encode_keepalive,
    encode_segment_start,
    encode_wal,
    split_frames,
)


def wal_frames(count: int, start: int = 0) -> bytes:
    return b"".join(
        encode_frame(records.encode(records.set_record(f"k{i}", f"v{i}".encode() * 10, i + 1, 0, 0)))
        for i in range(start, start + count)
    )


FRAMES = wal_frames(5)
MESSAGES = [
    SegmentStart(4096, 1),
    WalData(4120, FRAMES),
    Keepalive(4120 + len(FRAMES), 1_700_000_000_000, 1),
    WalData(4120 + len(FRAMES), wal_frames(1, start=5)),
    StreamEnd("timeline", "the primary moved to timeline 2"),
]


def encode(message: object) -> bytes:
    if isinstance(message, SegmentStart):
        return encode_segment_start(*message)
    if isinstance(message, WalData):
        return encode_wal(*message)
    if isinstance(message, Keepalive):
        return encode_keepalive(*message)
    assert isinstance(message, StreamEnd)
    return encode_end(*message)


STREAM = b"".join(encode(message) for message in MESSAGES)


def test_whole_stream() -> None:
    assert StreamDecoder().feed(STREAM) == MESSAGES


def test_byte_by_byte() -> None:
    decoder = StreamDecoder()
    out = []
    for index in range(len(STREAM)):
        out += decoder.feed(STREAM[index : index + 1])
    assert out == MESSAGES and decoder.buffered_bytes == 0


def test_trailing_partial_message_waits() -> None:
    decoder = StreamDecoder()
    assert decoder.feed(STREAM + encode_keepalive(1, 2, 3)[:-1]) == MESSAGES
    assert decoder.buffered_bytes > 0
    assert decoder.feed(b"\x03") == [Keepalive(1, 2, 3)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_split(cuts: list[int]) -> None:
    decoder = StreamDecoder()
    out = []
    points = [0, *sorted(cuts), len(STREAM)]
    for start, end in zip(points, points[1:]):
        out += decoder.feed(STREAM[start:end])
    assert out == MESSAGES


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(STREAM) - 1), st.integers(min_value=1, max_value=255))
def test_a_flipped_byte_is_never_delivered(position: int, mask: int) -> None:
    damaged = bytearray(STREAM)
    damaged[position] ^= mask
    decoder = StreamDecoder()
    try:
        out = decoder.feed(bytes(damaged))
    except StreamError:
        return
    # Not detected yet only when a length grew: then the decoder waits for bytes that never came.
    assert out == MESSAGES[: len(out)] and len(out) < len(MESSAGES)


def test_split_frames_checks_every_record() -> None:
    data = WalData(100, FRAMES)
    frames = split_frames(data)
    assert [f.lsn for f in frames][0] == 100 and frames[-1].end_lsn == data.end_lsn
    assert records.decode(frames[2].payload)[1] == "k2"
    damaged = bytearray(FRAMES)
    damaged[len(FRAMES) // 2] ^= 0x40
    with pytest.raises(StreamError, match="damaged WAL record"):
        split_frames(WalData(100, bytes(damaged)))
    with pytest.raises(StreamError, match="ends inside a record"):
        split_frames(WalData(100, FRAMES[:-3]))


@pytest.mark.parametrize(
    "payload",
    [b"\xc1", b"\x90", b"\x92\xa1w\x01", b"\x93\xa1w\xff\xc4\x01x", b"\x93\xa1q\x01\x02", b"\x93\xa1w\x01\xc4\x00"],
)
def test_malformed_messages_are_refused(payload: bytes) -> None:
    with pytest.raises(StreamError):
        StreamDecoder().feed(encode_frame(payload))
