"""The WAL's on-disk format: a pure codec, no I/O.

Layout
------
The WAL is one endless byte stream; an LSN is a byte position in it. The stream is
cut into segment files named after the LSN of their first byte
(`WAL/<16 hex digits>.wal`). A segment is a header followed by whole records; a
record never spans two segments, so a segment may end short of the size limit.

Segment header (SEGMENT_HEADER_BYTES, little-endian):

    magic        4 bytes  b"KVWL"
    version      u16      FORMAT_VERSION
    reserved     u16      0
    timeline     u32      timeline the segment was written on
    start_lsn    u64      LSN of the header's first byte (equals the file name)
    header_crc   u32      CRC-32C of the 20 bytes above

Record frame:

    length       u32      payload length, 1..MAX_PAYLOAD_BYTES
    crc          u32      CRC-32C of the payload
    payload      bytes    msgpack (see node/records.py)

A record's LSN is the position of its frame's first byte; its end LSN (the position
just after it) is what a write reports as its commit LSN.

`FrameDecoder` is a sans-IO decoder in the style of h11: bytes go in with `feed`,
`next_frame` returns a `Frame` or `NEED_DATA`, and damage is reported as
`CorruptFrame` with the LSN where it starts. It never buffers more than one frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, NamedTuple

import google_crc32c

SEGMENT_MAGIC: Final = b"KVWL"
FORMAT_VERSION: Final = 1
SEGMENT_HEADER = struct.Struct("<4sHHIQ")  # magic, version, reserved, timeline, start_lsn
SEGMENT_HEADER_BYTES: Final = SEGMENT_HEADER.size + 4  # + header_crc
FRAME_HEADER = struct.Struct("<II")  # payload length, payload crc
FRAME_HEADER_BYTES: Final = FRAME_HEADER.size
# Bounds every allocation a reader makes from a length it read off disk or the wire.
MAX_PAYLOAD_BYTES: Final = 64 * 1024 * 1024
SEGMENT_SUFFIX: Final = ".wal"

_CRC_BYTES = struct.Struct("<I")


def crc32c(data: bytes | bytearray | memoryview) -> int:
    checksum: int = google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data)  # untyped C extension
    return checksum


def format_lsn(lsn: int) -> str:
    """PostgreSQL's `X/Y` spelling: high and low 32 bits in hex."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """Accept `X/Y` (PostgreSQL style) or a plain decimal byte position."""
    text = text.strip()
    try:
        if "/" in text:
            high, low = text.split("/", 1)
            value = (int(high, 16) << 32) | int(low, 16)
        else:
            value = int(text)
    except ValueError:
        raise ValueError(f"not an LSN: {text!r} (expected X/Y in hex, or a byte position)") from None
    if value < 0 or value >= 1 << 64:
        raise ValueError(f"LSN out of range: {text!r}")
    return value


def segment_name(start_lsn: int) -> str:
    return f"{start_lsn:016X}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    """Start LSN of a segment file name, or None if the name is not a segment's."""
    stem, _, suffix = name.partition(".")
    if f".{suffix}" != SEGMENT_SUFFIX or len(stem) != 16:
        return None
    try:
        return int(stem, 16)
    except ValueError:
        return None


class WalFormatError(Exception):
    """Bytes that are not a valid part of the WAL."""


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    timeline: int
    start_lsn: int

    def encode(self) -> bytes:
        head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, 0, self.timeline, self.start_lsn)
        return head + _CRC_BYTES.pack(crc32c(head))

    @classmethod
    def decode(cls, data: bytes) -> SegmentHeader:
        if len(data) < SEGMENT_HEADER_BYTES:
            raise WalFormatError(f"segment header is {len(data)} bytes, expected {SEGMENT_HEADER_BYTES}")
        head = data[: SEGMENT_HEADER.size]
        magic, version, _reserved, timeline, start_lsn = SEGMENT_HEADER.unpack(head)
        if magic != SEGMENT_MAGIC:
            raise WalFormatError(f"bad segment magic {magic!r}")
        (stored_crc,) = _CRC_BYTES.unpack_from(data, SEGMENT_HEADER.size)
        if stored_crc != crc32c(head):
            raise WalFormatError("segment header checksum mismatch")
        if version != FORMAT_VERSION:
            raise WalFormatError(f"unsupported WAL format version {version} (this build reads {FORMAT_VERSION})")
        return cls(timeline=timeline, start_lsn=start_lsn)


def encode_frame(payload: bytes) -> bytes:
    size = len(payload)
    if not 0 < size <= MAX_PAYLOAD_BYTES:
        raise ValueError(f"record payload of {size} bytes is outside 1..{MAX_PAYLOAD_BYTES}")
    return FRAME_HEADER.pack(size, crc32c(payload)) + payload


def frame_size(data: bytes | bytearray, offset: int = 0) -> int:
    """Bytes of the frame starting at `offset` (header and payload), from its header alone."""
    payload_size: int = FRAME_HEADER.unpack_from(data, offset)[0]
    return FRAME_HEADER_BYTES + payload_size


def whole_frames(data: bytes | bytearray) -> int:
    """How many leading bytes of `data` are whole frames (lengths only: no checksum)."""
    offset = 0
    while offset + FRAME_HEADER_BYTES <= len(data):
        end = offset + frame_size(data, offset)
        if end > len(data):
            break
        offset = end
    return offset


def intact_payload(data: bytes | bytearray, offset: int) -> bytes | None:
    """The payload of the frame at `offset` if it is whole, its length possible and its
    checksum right; None otherwise."""
    if offset + FRAME_HEADER_BYTES > len(data):
        return None
    size, stored_crc = FRAME_HEADER.unpack_from(data, offset)
    end = offset + FRAME_HEADER_BYTES + size
    if not 0 < size <= MAX_PAYLOAD_BYTES or end > len(data):
        return None
    payload = bytes(data[offset + FRAME_HEADER_BYTES : end])
    return payload if crc32c(payload) == stored_crc else None


class Frame(NamedTuple):  # one per record read: a NamedTuple builds ~5x faster than a frozen dataclass
    lsn: int
    payload: bytes

    @property
    def end_lsn(self) -> int:
        return self.lsn + FRAME_HEADER_BYTES + len(self.payload)


@dataclass(frozen=True, slots=True)
class CorruptFrame:
    """A frame that cannot be valid: impossible length or checksum mismatch."""

    lsn: int
    reason: str


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


class FrameDecoder:
    """Incremental frame decoder over a byte stream that starts at `start_lsn`.

    Feed any split of the stream; frames come out whole. After a `CorruptFrame`
    the decoder stops: the caller decides whether that is a torn tail or damage.
    """

    def __init__(self, start_lsn: int, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self._buffer = bytearray()
        self._offset = 0  # bytes of _buffer already consumed
        self._lsn = start_lsn
        self._max_payload_bytes = max_payload_bytes
        self._failed: CorruptFrame | None = None

    @property
    def lsn(self) -> int:
        """LSN of the next frame to be returned."""
        return self._lsn

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer) - self._offset

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._offset > 0 and self._offset >= len(self._buffer) // 2:
            del self._buffer[: self._offset]
            self._offset = 0
        self._buffer += data

    def next_frame(self) -> Frame | CorruptFrame | _NeedData:
        if self._failed is not None:
            return self._failed
        available = len(self._buffer) - self._offset
        if available < FRAME_HEADER_BYTES:
            return NEED_DATA
        size, stored_crc = FRAME_HEADER.unpack_from(self._buffer, self._offset)
        if size == 0 or size > self._max_payload_bytes:
            self._failed = CorruptFrame(self._lsn, f"record length {size} outside 1..{self._max_payload_bytes}")
            return self._failed
        if available < FRAME_HEADER_BYTES + size:
            return NEED_DATA
        start = self._offset + FRAME_HEADER_BYTES
        payload = bytes(self._buffer[start : start + size])
        if crc32c(payload) != stored_crc:
            self._failed = CorruptFrame(self._lsn, "record checksum mismatch")
            return self._failed
        frame = Frame(self._lsn, payload)
        self._offset = start + size
        self._lsn = frame.end_lsn
        return frame
