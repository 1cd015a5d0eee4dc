"""WAL records for operators: one-line summaries, and the offline scan of a data directory.

`wal tail` (records streamed by a live node) and `wal inspect` (records read from a
stopped node's files) print records the same way, from the same JSON-friendly form
(`kvstore.node.records.describe` plus `lsn` and `end_lsn`). The offline scan uses the
node's own reader, so kvctl and the node agree on what is valid WAL; it opens the
files read-only and never repairs anything: a torn tail is reported and left for the
node to cut at its next start.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvstore.node import records
from kvstore.node.wal.format import format_lsn
from kvstore.node.wal.reader import WalCorruption, WalRecord, WalScan
from kvstore.node.wal.segments import TornTail

from .client import KvctlError

WAL_DIR_NAME = "WAL"
TXN_OPS_SHOWN_MAX = 5
# wal inspect streams rows, so its columns have fixed widths (an LSN is at most 17 chars).
INSPECT_COLUMNS = (("LSN", 17), ("END LSN", 17), ("KIND", 15), ("VERSION", 10), ("BYTES", 10), ("KEY / DETAIL", 0))


@dataclass(frozen=True, slots=True)
class WalSummary:
    """What `wal verify` found: valid records, where they lie, and any torn tail."""

    records: int
    first_lsn: int | None
    end_lsn: int
    segments: int
    torn_tail: TornTail | None


# -- describing records -----------------------------------------------------------------


def record_document(item: WalRecord) -> dict[str, Any]:
    """The form a live node streams: {"lsn", "end_lsn", "kind", ...}."""
    return {"lsn": format_lsn(item.lsn), "end_lsn": format_lsn(item.end_lsn), **records.describe(item.record)}


def tail_line(record: dict[str, Any]) -> str:
    """`0/1A2B  SET  key=foo version=12 bytes=5`"""
    return f"{record.get('lsn')}  {record.get('kind')}  {summary(record)}"


def summary(record: dict[str, Any]) -> str:
    kind = record.get("kind")
    if kind == "SET":
        text = f"key={show_key(record['key'])} version={record['version']} bytes={record['value_bytes']}"
        expires_at_ms = record.get("expires_at_ms")
        return f"{text} expires_at_ms={expires_at_ms}" if expires_at_ms else text
    if kind == "DEL":
        text = f"key={show_key(record['key'])} version={record['version']}"
        return f"{text} expired" if record.get("expired") else text
    if kind == "TXN":
        ops = record["ops"]
        shown = "; ".join(f"{op['kind']} {summary(op)}" for op in ops[:TXN_OPS_SHOWN_MAX])
        more = f"; +{len(ops) - TXN_OPS_SHOWN_MAX} more" if len(ops) > TXN_OPS_SHOWN_MAX else ""
        return f"ops={len(ops)} [{shown}{more}]"
    if kind == "CHECKPOINT":
        return f"redo={record['redo_lsn']} snapshot={record['snapshot']}"
    if kind == "TIMELINE_SWITCH":
        return f"timeline={record['timeline']} parent={record['parent_timeline']} switch={record['switch_lsn']}"
    return " ".join(f"{name}={value}" for name, value in record.items() if name not in ("lsn", "end_lsn", "kind"))


def inspect_lines(record: dict[str, Any]) -> list[str]:
    """Rows of the `wal inspect` table: one per record, plus one per op of a TXN."""
    kind = record["kind"]
    if kind == "TXN":
        head = _row(record["lsn"], record["end_lsn"], kind, "", "", f"{len(record['ops'])} ops")
        return [head, *(_op_row(op) for op in record["ops"])]
    if kind in ("SET", "DEL"):
        return [_row(record["lsn"], record["end_lsn"], kind, *_key_cells(record))]
    return [_row(record["lsn"], record["end_lsn"], kind, "", "", summary(record))]


def inspect_header() -> str:
    return _row(*(name for name, _width in INSPECT_COLUMNS))


def _op_row(op: dict[str, Any]) -> str:
    return _row("", "", f"  {op['kind']}", *_key_cells(op))


def _key_cells(record: dict[str, Any]) -> tuple[str, str, str]:
    return str(record["version"]), str(record.get("value_bytes", "")), show_key(record["key"])


def _row(*cells: str) -> str:
    return "".join(
        cell.ljust(width + 1) if width else cell for cell, (_name, width) in zip(cells, INSPECT_COLUMNS, strict=True)
    )


def show_key(key: str) -> str:
    """A key as typed, or JSON-quoted when it has spaces, quotes or unprintable characters."""
    return key if key and key.isprintable() and " " not in key and '"' not in key else json.dumps(key)


def torn_tail_document(torn: TornTail) -> dict[str, Any]:
    return {
        "lsn": format_lsn(torn.lsn),
        "bytes": torn.cut_bytes,
        "segment": str(torn.segment.path),
        "reason": torn.reason,
    }


def describe_torn_tail(torn: TornTail) -> str:
    return (
        f"torn tail at LSN {format_lsn(torn.lsn)} ({torn.cut_bytes} bytes) would be cut at next start"
        f" ({torn.segment.path.name}: {torn.reason})"
    )


# -- reading a data directory ---------------------------------------------------------


def wal_dir(data_dir: Path) -> Path:
    path = data_dir / WAL_DIR_NAME
    if not path.is_dir():
        raise KvctlError(f"{data_dir} has no {WAL_DIR_NAME} directory; is it a kvstored data directory?")
    return path


def open_scan(data_dir: Path, from_lsn: int | None) -> WalScan:
    """A scan that starts at the beginning of the segment holding `from_lsn`.

    Starting at a segment boundary means `from_lsn` need not be a record's LSN: the
    caller skips records before it, as pg_waldump finds the first record at or after
    its start position.
    """
    scan = _new_scan(wal_dir(data_dir), None)
    if from_lsn is None or not scan.segments:
        return scan  # an empty WAL directory is reported when the scan runs
    starts = [segment.start_lsn for segment in scan.segments if segment.start_lsn <= from_lsn]
    if not starts:
        oldest = scan.segments[0]
        raise KvctlError(
            f"the WAL at LSN {format_lsn(from_lsn)} has been removed; the oldest segment,"
            f" {oldest.path.name}, starts at {format_lsn(oldest.start_lsn)}"
        )
    return _new_scan(scan.wal_dir, starts[-1])


def read_records(scan: WalScan, from_lsn: int | None, limit: int | None) -> Iterator[dict[str, Any]]:
    """Records at or after `from_lsn`, at most `limit`; damage raises `KvctlError`."""
    items = (item for item in _checked(scan) if from_lsn is None or item.lsn >= from_lsn)
    for item in itertools.islice(items, limit):
        yield record_document(item)


def verify(data_dir: Path) -> WalSummary:
    scan = _new_scan(wal_dir(data_dir), None)
    count, first_lsn = 0, None
    for item in _checked(scan):
        if first_lsn is None:
            first_lsn = item.lsn
        count += 1
    assert scan.end_lsn is not None, "a finished scan knows where the WAL ends"
    return WalSummary(count, first_lsn, scan.end_lsn, len(scan.segments), scan.torn_tail)


def _checked(scan: WalScan) -> Iterator[WalRecord]:
    try:
        yield from scan
    except WalCorruption as exc:
        raise KvctlError(str(exc)) from None
    except OSError as exc:
        raise KvctlError(f"cannot read WAL file {exc.filename}: {exc.strerror}") from None


def _new_scan(directory: Path, from_lsn: int | None) -> WalScan:
    try:
        return WalScan(directory, records.decode, from_lsn=from_lsn)
    except OSError as exc:
        raise KvctlError(f"cannot list {directory}: {exc.strerror}") from None
