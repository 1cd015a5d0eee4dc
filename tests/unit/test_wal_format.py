"""The frame codec and its sans-IO decoder: fed whole, byte by byte, with trailing data, fuzzed."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.node import records
from kvstore.node.wal.format import (
    FRAME_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    NEED_DATA,
    CorruptFrame,
    Frame,
    FrameDecoder,
    SegmentHeader,
    WalFormatError,
    encode_frame,
    format_lsn,
    parse_lsn,
    parse_segment_name,
    segment_name,
)

BASE_LSN = 4096


def _payloads() -> list[bytes]:
    return [
        records.encode(records.set_record("a", b"1", 1, 10, 0)),
        records.encode(records.del_record("a", 2)),
        records.encode(
            records.txn_record([records.set_record("b", b"x" * 300, 3, 11, 99), records.del_record("c", 3)])
        ),
    ]


def _drain(decoder: FrameDecoder) -> list[Frame | CorruptFrame]:
    out: list[Frame | CorruptFrame] = []
    while True:
        item = decoder.next_frame()
        if item is NEED_DATA:
            return out
        out.append(item)  # type: ignore[arg-type]
        if isinstance(item, CorruptFrame):
            return out


def test_whole_buffer_gives_every_frame_with_its_lsn() -> None:
    payloads = _payloads()
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder(BASE_LSN)
    decoder.feed(stream)
    frames = _drain(decoder)
    assert [f.payload for f in frames] == payloads  # type: ignore[union-attr]
    assert frames[0].lsn == BASE_LSN
    assert frames[1].lsn == frames[0].end_lsn == BASE_LSN + FRAME_HEADER_BYTES + len(payloads[0])  # type: ignore[union-attr]
    assert decoder.lsn == BASE_LSN + len(stream)


def test_byte_by_byte_gives_the_same_frames() -> None:
    payloads = _payloads()
    stream = b"".join(encode_frame(p) for p in payloads)
    decoder = FrameDecoder(BASE_LSN)
    frames: list[Frame | CorruptFrame] = []
    for byte in stream:
        decoder.feed(bytes([byte]))
        frames.extend(_drain(decoder))
    assert [f.payload for f in frames] == payloads  # type: ignore[union-attr]


def test_trailing_partial_frame_needs_data_and_is_kept() -> None:
    payloads = _payloads()
    full = encode_frame(payloads[0])
    partial = encode_frame(payloads[1])[:5]
    decoder = FrameDecoder(0)
    decoder.feed(full + partial)
    assert len(_drain(decoder)) == 1
    assert decoder.buffered_bytes == 5
    decoder.feed(encode_frame(payloads[1])[5:])
    assert [f.payload for f in _drain(decoder)] == [payloads[1]]  # type: ignore[union-attr]


def test_checksum_mismatch_is_reported_at_the_frame_lsn() -> None:
    good, bad = encode_frame(b"\x91\x01"), bytearray(encode_frame(b"\x93\x02\xa1a\x05"))
    bad[-1] ^= 0x01
    decoder = FrameDecoder(100)
    decoder.feed(good + bytes(bad))
    out = _drain(decoder)
    assert isinstance(out[0], Frame)
    assert out[1] == CorruptFrame(100 + len(good), "record checksum mismatch")
    assert decoder.next_frame() == out[1]  # sticky: the decoder never resumes past damage


@pytest.mark.parametrize("length", [0, MAX_PAYLOAD_BYTES + 1, 0xFFFFFFFF])
def test_impossible_length_is_corrupt_before_allocating(length: int) -> None:
    decoder = FrameDecoder(0)
    decoder.feed(struct.pack("<II", length, 0))
    item = decoder.next_frame()
    assert isinstance(item, CorruptFrame)
    assert "record length" in item.reason


def test_encode_refuses_empty_and_oversized_payloads() -> None:
    with pytest.raises(ValueError):
        encode_frame(b"")


def test_segment_header_round_trip_and_damage() -> None:
    header = SegmentHeader(timeline=3, start_lsn=0x1_0000_0000)
    encoded = header.encode()
    assert SegmentHeader.decode(encoded) == header
    damaged = bytearray(encoded)
    damaged[10] ^= 0xFF
    with pytest.raises(WalFormatError, match="checksum"):
        SegmentHeader.decode(bytes(damaged))
    with pytest.raises(WalFormatError, match="magic"):
        SegmentHeader.decode(b"XXXX" + encoded[4:])


def test_lsn_spelling() -> None:
    assert format_lsn(0x1_0000_00AB) == "1/AB"
    assert parse_lsn("1/AB") == 0x1_0000_00AB
    assert parse_lsn("171") == 171
    with pytest.raises(ValueError):
        parse_lsn("zz/1")
    assert parse_segment_name(segment_name(0xABC)) == 0xABC
    assert parse_segment_name("0000000000000ABC.wal.0000000000000ABD.broken") is None
    assert parse_segment_name("notes.txt") is None


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=10),
)
def test_any_split_of_the_stream_decodes_identically(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    decoder = FrameDecoder(0)
    frames: list[Frame | CorruptFrame] = []
    for start, end in zip(points, points[1:]):
        decoder.feed(stream[start:end])
        frames.extend(_drain(decoder))
    assert [f.payload for f in frames] == payloads  # type: ignore[union-attr]
    assert decoder.buffered_bytes == 0


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=300), position=st.integers(min_value=0))
def test_flipped_byte_never_yields_a_wrong_frame(garbage: bytes, position: int) -> None:
    """Damage anywhere yields the frames before it intact, then CorruptFrame or NEED_DATA."""
    payloads = [b"alpha-payload", b"beta", b"gamma" * 20]
    stream = bytearray(b"".join(encode_frame(p) for p in payloads))
    index = position % len(stream)
    stream[index] ^= 0x5A
    decoder = FrameDecoder(0)
    decoder.feed(bytes(stream) + garbage)
    for item in _drain(decoder):
        if isinstance(item, Frame):
            assert not item.lsn <= index < item.end_lsn, "a frame holding the damaged byte was accepted"
            assert item.payload in payloads


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.builds(
                records.set_record,
                st.text(min_size=1, max_size=30),
                st.binary(max_size=50),
                st.integers(0, 2**63),
                st.integers(0, 2**50),
                st.integers(0, 2**50),
            ),
            st.builds(records.del_record, st.text(min_size=1, max_size=30), st.integers(0, 2**63)),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_records_round_trip(ops: list[records.Record]) -> None:
    for op in ops:
        assert records.decode(records.encode(op)) == op
    txn = records.txn_record(ops)
    assert records.decode(records.encode(txn)) == txn


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [99],
        [records.SET, "k"],
        [records.SET, 1, b"v", 1, 1, 0],
        [records.DEL, "k", -1],
        [records.TXN, [[records.CHECKPOINT, 1, "s", 1]]],
        "text",
    ],
)
def test_malformed_records_are_refused(bad: object) -> None:
    with pytest.raises(records.RecordFormatError):
        records.decode(records.msgpack.packb(bad, use_bin_type=True))


def test_an_expirers_del_round_trips_and_an_unknown_fourth_field_is_refused() -> None:
    expired = records.decode(records.encode(records.del_record("k", 7, expired=True)))
    assert expired == [records.DEL, "k", 7, records.EXPIRED]
    assert records.describe(expired)["expired"] is True
    assert records.describe(records.del_record("k", 7))["expired"] is False
    with pytest.raises(records.RecordFormatError):
        records.decode(records.encode([records.DEL, "k", 7, 2]))
