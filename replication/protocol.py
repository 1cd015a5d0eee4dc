"""The replication stream's wire format, sans-IO: bytes in, messages out.

The body of `GET /v1/replication/stream` is a sequence of messages, each framed like
a WAL record (`u32 length | u32 CRC-32C | msgpack payload`), so a message damaged on
the wire is caught before anything of it is used. Payloads:

    ["s", start_lsn, timeline]        a WAL segment starts at start_lsn (its header
                                      comes first; its records follow it)
    ["w", lsn, frames]                consecutive whole WAL frames, byte for byte as
                                      the primary wrote them, the first at lsn
    ["k", write_lsn, time_ms, timeline]  keepalive: how far the primary's WAL is written
                                      (what it streams), and its clock (lag in seconds when idle)
    ["e", code, message]              the primary ends the stream with a reason

HTTP chunks never line up with messages: feed any split, messages come out whole.

`GET /v1/replication/identify` answers a JSON document (PostgreSQL's IDENTIFY_SYSTEM),
built and parsed only here, as `Identity`:

    {"system_identifier": "<decimal>", "timeline": 2, "role": "primary" | "replica",
     "write_lsn": 1234, "history": [{"parent": 1, "switch_lsn": 1000}, ...],
     "fenced": null | "why this primary must not be followed"}
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import msgpack

from kvstore.node.errors import Conflict
from kvstore.node.wal.format import (
    FRAME_HEADER,
    MAX_PAYLOAD_BYTES,
    CorruptFrame,
    Frame,
    FrameDecoder,
    crc32c,
)

from .timelines import Switch

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
    write_lsn: int
    time_ms: int
    timeline: int


class StreamEnd(NamedTuple):
    code: str
    message: str


Message = SegmentStart | WalData | Keepalive | StreamEnd


class StreamError(Exception):
    """The stream is damaged or not ours: drop the connection and reconnect; apply nothing of it."""


class ReplicationError(Exception):
    """Replication with a peer cannot go on from here; the message says why and what to do."""


class Refusal(enum.StrEnum):
    """Why a primary will not stream to a replica; the replica acts on it (replica.py)."""

    SYSTEM_MISMATCH = "system_mismatch"  # another cluster: an operator must act
    FENCED = "fenced"  # this primary's timeline was superseded
    NOT_PRIMARY = "not_primary"  # fenced, or its WAL failed: find the primary
    DIVERGED = "diverged"  # the replica's WAL goes past the branch point: rewind or re-bootstrap
    AHEAD = "ahead"  # the replica holds WAL this node does not
    WAL_REMOVED = "wal_removed"  # recycled: take a new base backup
    NO_SLOT = "no_slot"  # feedback before a stream opened the slot
    SLOT_LOST = "slot_lost"  # the slot outgrew max_slot_wal_keep_bytes: take a new base backup


class Refused(Conflict, ReplicationError):
    """A primary's refusal: a 409 with the refusal as its code before a stream starts, an end
    message within one; raised by the primary and, from what it answered, on the replica."""

    def __init__(self, refusal: Refusal, message: str, **details: object) -> None:
        super().__init__(message, **details)
        self.code = refusal
        self.refusal = refusal


def refused(code: str, message: str) -> ReplicationError:
    """What a primary's refusal code means here: a Refused for a known one, else only the message."""
    try:
        return Refused(Refusal(code), message)
    except ValueError:
        return ReplicationError(message)


def _frame(payload: bytes) -> bytes:
    return FRAME_HEADER.pack(len(payload), crc32c(payload)) + payload


def encode_segment_start(start_lsn: int, timeline: int) -> bytes:
    return _frame(msgpack.packb(["s", start_lsn, timeline]))


def encode_wal(lsn: int, frames: bytes) -> bytes:
    return _frame(msgpack.packb(["w", lsn, frames]))


def encode_keepalive(write_lsn: int, time_ms: int, timeline: int) -> bytes:
    return _frame(msgpack.packb(["k", write_lsn, time_ms, timeline]))


def encode_end(code: Refusal, message: str) -> bytes:
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


# -- IDENTIFY ------------------------------------------------------------------------------

ROLES: Final = ("primary", "replica")


@dataclass(frozen=True, slots=True)
class Identity:
    """What a node says about itself to the replication user."""

    system_identifier: int
    timeline: int
    role: str  # one of ROLES
    write_lsn: int
    history: tuple[Switch, ...]  # how its timeline descends from timeline 1, oldest first
    fenced: str | None  # a primary that must not be followed says why

    @property
    def takes_writes(self) -> bool:
        return self.role == "primary" and self.fenced is None

    def to_document(self) -> dict[str, Any]:
        return {
            # A string: 64-bit integers lose precision in JSON readers that use doubles.
            "system_identifier": str(self.system_identifier),
            "timeline": self.timeline,
            "role": self.role,
            "write_lsn": self.write_lsn,
            "history": [{"parent": s.parent, "switch_lsn": s.switch_lsn} for s in self.history],
            "fenced": self.fenced,
        }


def parse_identity(url: str, document: object) -> Identity:
    """`document` (decoded JSON) as an Identity; ReplicationError naming `url` when it is not one."""
    try:
        return _identity(document)
    except ValueError as error:
        raise ReplicationError(
            f"{url} answered the identify request with something that is not a kvstored node: {error}"
        ) from None


def _identity(document: object) -> Identity:
    system_identifier = _field(document, "system_identifier")
    if not isinstance(system_identifier, str) or not system_identifier.isdigit():
        raise ValueError(f"system_identifier {_preview(system_identifier)} is not a decimal string")
    role, fenced, history = _field(document, "role"), _field(document, "fenced"), _field(document, "history")
    if role not in ROLES:
        raise ValueError(f"role {_preview(role)} is not one of {', '.join(ROLES)}")
    if fenced is not None and not isinstance(fenced, str):
        raise ValueError(f"fenced {_preview(fenced)} is neither null nor a reason")
    if not isinstance(history, list):
        raise ValueError(f"history {_preview(history)} is not a list")
    return Identity(
        system_identifier=int(system_identifier),
        timeline=_count(document, "timeline", minimum=1),
        role=role,
        write_lsn=_count(document, "write_lsn"),
        history=tuple(Switch(_count(item, "parent", 1), _count(item, "switch_lsn"), 0) for item in history),
        fenced=fenced,
    )


def _field(document: object, name: str) -> object:
    if not isinstance(document, dict):
        raise ValueError(f"expected a JSON object, got {_preview(document)}")
    if name not in document:
        raise ValueError(f"no {name!r} in {_preview(document)}")
    return document[name]


def _count(document: object, name: str, minimum: int = 0) -> int:
    value = _field(document, name)
    if type(value) is not int or value < minimum:
        raise ValueError(f"{name} {_preview(value)} is not an integer >= {minimum}")
    return value


def _preview(value: object) -> str:
    return repr(value)[:80]
