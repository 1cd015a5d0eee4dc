"""Damage to a stopped node's WAL directory, chosen so that each kind tests one promise:

- a torn tail: half of a frame is appended to the last segment, as when the machine dies
  in the middle of a write. That write was never acknowledged, so recovery must cut it and
  lose nothing. (Cutting into an existing record would destroy an fsynced, acknowledged
  write: a disk that lies about fsync, which no WAL survives.)
- a flipped byte: one payload byte of a record that recovery must replay, with valid
  records after it. The node must refuse to start (exit code 4) and name the record's LSN.

The docker backend runs this module inside a container that mounts the node's volume:

    python3 -m kvstore.chaos.waldamage corrupt DATA_DIR torn-tail|flipped-byte   (prints the damage as JSON)
    python3 -m kvstore.chaos.waldamage undo DATA_DIR DAMAGE_JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kvstore.node.control import read_control
from kvstore.node.records import decode as decode_record
from kvstore.node.wal.format import FRAME_HEADER_BYTES
from kvstore.node.wal.reader import WalRecord, WalScan
from kvstore.node.wal.segments import list_segments

from .backend import Corruption, WalDamage

MIN_RECORDS_TO_FLIP = 3  # the victim needs valid records after it, or it reads as a torn tail


class NotEnoughWal(Exception):
    """The WAL holds too little to damage in the way asked."""


def corrupt(data_dir: Path, kind: Corruption) -> WalDamage:
    records = list(WalScan(data_dir / "WAL", decode_record, from_lsn=read_control(data_dir / "control").redo_lsn))
    if kind is Corruption.TORN_TAIL:
        return _tear_tail(records)
    return _flip_byte(records)


def undo(damage: WalDamage, data_dir: Path) -> None:
    path = data_dir / "WAL" / damage.segment
    with open(path, "r+b") as file:
        if damage.original:
            file.seek(damage.offset)
            file.write(damage.original)
        else:
            file.truncate(damage.offset)


def _tear_tail(records: list[WalRecord]) -> WalDamage:
    if not records:
        raise NotEnoughWal("no record after the redo LSN to copy into a torn tail")
    last = records[-1]
    segment = list_segments(last.segment.path.parent)[-1]  # the live segment, maybe empty of records
    frame = last.segment.path.read_bytes()[last.lsn - last.segment.start_lsn : last.end_lsn - last.segment.start_lsn]
    with open(segment.path, "ab") as file:
        file.write(frame[: FRAME_HEADER_BYTES + (len(frame) - FRAME_HEADER_BYTES) // 2])
    return WalDamage(Corruption.TORN_TAIL, segment.path.name, segment.end_lsn, segment.size_bytes, b"")


def _flip_byte(records: list[WalRecord]) -> WalDamage:
    if len(records) < MIN_RECORDS_TO_FLIP:
        raise NotEnoughWal(f"{len(records)} records after the redo LSN; a flipped byte needs {MIN_RECORDS_TO_FLIP}")
    victim = records[len(records) // 2]
    offset = victim.lsn - victim.segment.start_lsn + FRAME_HEADER_BYTES + 1
    with open(victim.segment.path, "r+b") as file:
        file.seek(offset)
        original = file.read(1)
        file.seek(offset)
        file.write(bytes([original[0] ^ 0xFF]))
    return WalDamage(Corruption.FLIPPED_BYTE, victim.segment.path.name, victim.lsn, offset, original)


def main(argv: list[str]) -> None:
    match argv:
        case ["corrupt", data_dir, kind] if kind in set(Corruption):
            print(json.dumps(corrupt(Path(data_dir), Corruption(kind)).to_json()))
        case ["undo", data_dir, damage]:
            undo(WalDamage.from_json(json.loads(damage)), Path(data_dir))
        case _:
            kinds = "|".join(Corruption)
            sys.exit(f"usage: waldamage corrupt DATA_DIR {kinds} | undo DATA_DIR DAMAGE_JSON")


if __name__ == "__main__":
    main(sys.argv[1:])
