"""WAL record payloads: msgpack arrays holding after-images. Pure, no I/O.

Every record states the result of a change (the value, version and absolute expiry a
key ends up with), never the change itself, so applying a record twice gives the
same state: replay after a crash and replicas may re-apply freely.

    SET              [1, key, value, version, created_at_ms, expires_at_ms]  (0 = no expiry)
    DEL              [2, key, version]  or  [2, key, version, 1]: the key's TTL ran out (the expirer's)
    TXN              [3, [SET or DEL, ...]]            applied atomically
    CHECKPOINT       [4, redo_lsn, snapshot_name, time_ms]
    TIMELINE_SWITCH  [5, timeline, parent_timeline, switch_lsn, time_ms]
    TIME             [6, time_ms]     the primary's clock for the records after it: logged before
                                      the first write of each millisecond while archiving is on,
                                      so a restore can stop at a time (restore --target-time)

`version` is the node-wide revision the change was made at (as etcd's mod_revision):
monotonic per key and never reused, even after a delete, so an ETag cannot match a
different incarnation of the key.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

from .wal.format import format_lsn

SET: Final = 1
DEL: Final = 2
TXN: Final = 3
CHECKPOINT: Final = 4
TIMELINE_SWITCH: Final = 5
TIME: Final = 6

KIND_NAMES: Final = {
    SET: "SET",
    DEL: "DEL",
    TXN: "TXN",
    CHECKPOINT: "CHECKPOINT",
    TIMELINE_SWITCH: "TIMELINE_SWITCH",
    TIME: "TIME",
}

Record = list[Any]

_packer = msgpack.Packer(use_bin_type=True)


class RecordFormatError(ValueError):
    """A payload whose checksum matched but whose content is not a record."""


def set_record(key: str, value: bytes, version: int, created_at_ms: int, expires_at_ms: int) -> Record:
    return [SET, key, value, version, created_at_ms, expires_at_ms]


EXPIRED: Final = 1  # a DEL's optional fourth field: logged by the expirer, not asked for


def del_record(key: str, version: int, expired: bool = False) -> Record:
    return [DEL, key, version, EXPIRED] if expired else [DEL, key, version]


def txn_record(ops: list[Record]) -> Record:
    return [TXN, ops]


def checkpoint_record(redo_lsn: int, snapshot_name: str, time_ms: int) -> Record:
    return [CHECKPOINT, redo_lsn, snapshot_name, time_ms]


def timeline_switch_record(timeline: int, parent_timeline: int, switch_lsn: int, time_ms: int) -> Record:
    return [TIMELINE_SWITCH, timeline, parent_timeline, switch_lsn, time_ms]


def time_record(time_ms: int) -> Record:
    return [TIME, time_ms]


def encode(record: Record) -> bytes:
    return _packer.pack(record)


def decode(payload: bytes) -> Record:
    """Decode and check the shape of a record, so apply() never sees a malformed one."""
    try:
        record: Record = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)  # checked below
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise RecordFormatError(f"payload is not msgpack: {exc}") from None
    _check(record, nested=False)
    return record


def _check(record: Any, nested: bool) -> None:
    if not isinstance(record, list) or not record or not isinstance(record[0], int):
        raise RecordFormatError(f"record is not [kind, ...]: {type(record).__name__}")
    kind = record[0]
    if kind == SET:
        ok = (
            len(record) == 6
            and isinstance(record[1], str)
            and isinstance(record[2], bytes)
            and all(isinstance(field, int) and field >= 0 for field in record[3:6])
        )
    elif kind == DEL:
        ok = (
            (len(record) == 3 or (len(record) == 4 and record[3] == EXPIRED))
            and isinstance(record[1], str)
            and isinstance(record[2], int)
            and record[2] >= 0
        )
    elif kind == TXN and not nested:
        ok = len(record) == 2 and isinstance(record[1], list)
        if ok:
            for op in record[1]:
                _check(op, nested=True)
                if op[0] not in (SET, DEL):
                    raise RecordFormatError(f"TXN may hold only SET and DEL, not {KIND_NAMES.get(op[0], op[0])}")
    elif kind == CHECKPOINT and not nested:
        ok = (
            len(record) == 4
            and isinstance(record[1], int)
            and isinstance(record[2], str)
            and isinstance(record[3], int)
        )
    elif kind == TIMELINE_SWITCH and not nested:
        ok = len(record) == 5 and all(isinstance(field, int) for field in record[1:])
    elif kind == TIME and not nested:
        ok = len(record) == 2 and isinstance(record[1], int) and record[1] >= 0
    else:
        raise RecordFormatError(f"unknown record kind {kind}")
    if not ok:
        raise RecordFormatError(f"malformed {KIND_NAMES[kind]} record")


def describe(record: Record) -> dict[str, Any]:
    """A JSON-friendly view for `kvctl wal inspect` and `wal tail`."""
    kind = record[0]
    name = KIND_NAMES[kind]
    if kind == SET:
        _, key, value, version, created_at_ms, expires_at_ms = record
        return {
            "kind": name,
            "key": key,
            "value_bytes": len(value),
            "value_preview": value[:32].decode("utf-8", "replace"),
            "version": version,
            "created_at_ms": created_at_ms,
            "expires_at_ms": expires_at_ms or None,
        }
    if kind == DEL:
        return {"kind": name, "key": record[1], "version": record[2], "expired": len(record) == 4}
    if kind == TXN:
        return {"kind": name, "ops": [describe(op) for op in record[1]]}
    if kind == CHECKPOINT:
        return {"kind": name, "redo_lsn": format_lsn(record[1]), "snapshot": record[2], "time_ms": record[3]}
    if kind == TIME:
        return {"kind": name, "time_ms": record[1]}
    return {
        "kind": name,
        "timeline": record[1],
        "parent_timeline": record[2],
        "switch_lsn": format_lsn(record[3]),
        "time_ms": record[4],
    }
