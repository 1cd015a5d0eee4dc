"""The replication stream's wire format, sans-IO: bytes in, messages out.

The body of `GET /v1/replication/stream` is a sequence of messages, each framed like
a WAL record (`u32 length | u32 CRC-32C | msgpack payload`), so a message damaged on
the wire is caught before anything of it is used. Payloads:

    ["s", start_lsn, timeline]        a WAL segment starts at start_lsn (its header
                                      comes first; its records follow it)
    ["w", lsn, frames]                consecutive whole WAL frames, byte for byte as
                                      the primary wrote them, the first at lsn
    ["k", flush_lsn, time_ms, timeline]  keepalive: how far the primary has flushed,
                                      and its clock (lag in seconds when idle)
    ["e", code, message]              the primary ends the stream with a reason

HTTP chunks never line up with messages: feed any split, messages come out whole.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import msgpack

from kvstore.node.wal.format import (
    FRAME_HEADER,
    MAX_PAYLOAD_BYTES,
    CorruptFrame,
    Frame,
    FrameDecoder,
    crc32c,
)

# A `w` message carries at most this much WAL, unless a single record is bigger.
BATCH_BYTES: Final = 1024 * 1024
_MAX_MESSAGE_BYTES: Final = MAX_PAYLOAD_BYTES + 1024  # one record of the largest size, plus the envelope


class SegmentStart(NamedTuple):
    start_lsn: int
    timeline: int


class WalData(NamedTuple):
    lsn: int
    frames: bytes

    @property
    def end_lsn(self) -> int:
        return self.lsn + len(self.frames)


class Keepalive(NamedTuple):
    flush_lsn: int
    time_ms: int
    timeline: int


class StreamEnd(NamedTuple):
    code: str
    message: str


Message = SegmentStart | WalData | Keepalive | StreamEnd


class StreamError(Exception):
    """The stream is damaged or not ours: drop the connection and reconnect; apply nothing of it."""


def _frame(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload), crc32c(payload)) + payload


def encode_segment_start(start_lsn: int, timeline: int) -> bytes:
    return _frame(msgpack.packb(["s", start_lsn, timeline]))


def encode_wal(lsn: int, frames: bytes) -> bytes:
    return _frame(msgpack.packb(["w", lsn, frames]))


def encode_keepalive(flush_lsn: int, time_ms: int, timeline: int) -> bytes:
    return _frame(msgpack.packb(["k", flush_lsn, time_ms, timeline]))


def encode_end(code: str, message: str) -> bytes:
    return _frame(msgpack.packb(["e", code, message]))


def _natural(value: object) -> bool:
    return type(value) is int and value >= 0


def _message(payload: bytes) -> Message:
    try:
        item = msgpack.unpackb(payload)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise StreamError(f"message is not msgpack: {exc}") from None
    if not isinstance(item, list) or not item:
        raise StreamError("message is not a list")
    kind, fields = item[0], item[1:]
    if kind == "w" and len(fields) == 2 and _natural(fields[0]) and isinstance(fields[1], bytes) and fields[1]:
        return WalData(fields[0], fields[1])
    if kind == "k" and len(fields) == 3 and all(_natural(field) for field in fields):
        return Keepalive(*fields)
    if kind == "s" and len(fields) == 2 and all(_natural(field) for field in fields):
        return SegmentStart(*fields)
    if kind == "e" and len(fields) == 2 and all(isinstance(field, str) for field in fields):
        return StreamEnd(*fields)
    raise StreamError(f"unknown or malformed message {str(item)[:80]}")


class StreamDecoder:
    def __init__(self) -> None:
        self._frames = FrameDecoder(0, _MAX_MESSAGE_BYTES)

    @property
    def buffered_bytes(self) -> int:
        return self._frames.buffered_bytes

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Every message completed by `data`; StreamError on damage (the decoder is then spent)."""
        self._frames.feed(data)
        messages: list[Message] = []
        while True:
            frame = self._frames.next_frame()
            if isinstance(frame, Frame):
                messages.append(_message(frame.payload))
            elif isinstance(frame, CorruptFrame):
                raise StreamError(f"damaged message at stream byte {frame.lsn}: {frame.reason}")
            else:
                return messages


def split_frames(data: WalData) -> list[Frame]:
    """The WAL records in a `w` message, each checked against its own CRC."""
    decoder = FrameDecoder(data.lsn)
    decoder.feed(data.frames)
    frames: list[Frame] = []
    while True:
        frame = decoder.next_frame()
        if isinstance(frame, Frame):
            frames.append(frame)
        elif isinstance(frame, CorruptFrame):
            raise StreamError(f"damaged WAL record at {frame.lsn}: {frame.reason}")
        elif decoder.buffered_bytes:
            raise StreamError(f"WAL data ends inside a record at {decoder.lsn}")
        else:
            return frames
