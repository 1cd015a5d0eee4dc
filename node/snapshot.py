"""Snapshot files: the store's entries at a redo LSN, CRC-framed. Codec plus file I/O.

    magic    8 bytes  b"KVSNAP01"
    frame    header   {"redo_lsn", "timeline", "created_at_ms"}
    frame*   chunk    flat msgpack array [key, value, version, created_at_ms, expires_at_ms, key, ...]
    frame    trailer  {"entries": n, "revision": r}    (its presence proves the file is whole)

Frames are the WAL's (`u32 length | u32 CRC-32C | payload`). A snapshot is written
to a temp file, fsynced, renamed, and the directory fsynced; a file without a valid
trailer is never loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack

from .fsutil import fsync_dir
from .store import Entry
from .wal.format import NEED_DATA, CorruptFrame, Frame, FrameDecoder, encode_frame

SNAPSHOT_MAGIC: Final = b"KVSNAP01"
READ_CHUNK_BYTES: Final = 1024 * 1024
_FIELDS_PER_ENTRY: Final = 5


class SnapshotError(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"snapshot {path}: {reason}")
        self.path = path


def snapshot_name(redo_lsn: int) -> str:
    return f"snapshot_{redo_lsn:016X}.chk"


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    redo_lsn: int
    timeline: int
    created_at_ms: int
    entries: int
    revision: int


def encode_chunk(items: Iterator[tuple[str, Entry]] | Any) -> bytes:
    flat: list[Any] = []
    for key, entry in items:
        flat.append(key)
        flat.extend(entry)
    return encode_frame(msgpack.packb(flat, use_bin_type=True))


class SnapshotWriter:
    """Writes one snapshot; `write_chunk` and `finish` do blocking I/O (call from a thread)."""

    def __init__(self, final_path: Path, redo_lsn: int, timeline: int, created_at_ms: int) -> None:
        self.final_path = final_path
        self._temp_path = final_path.with_name(f".{final_path.name}.tmp")
        # 0600: snapshots hold the catalogs (password hashes, signing keys).
        self._file = os.fdopen(os.open(self._temp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
        header = {"redo_lsn": redo_lsn, "timeline": timeline, "created_at_ms": created_at_ms}
        self._file.write(SNAPSHOT_MAGIC + encode_frame(msgpack.packb(header)))
        self.entries = 0

    def write_chunk(self, frame: bytes, entries: int) -> None:
        self._file.write(frame)
        self.entries += entries

    def finish(self, revision: int) -> int:
        """Seal, fsync and rename into place; returns the file size."""
        self._file.write(encode_frame(msgpack.packb({"entries": self.entries, "revision": revision})))
        self._file.flush()
        os.fsync(self._file.fileno())
        size = self._file.tell()
        self._file.close()
        os.replace(self._temp_path, self.final_path)
        fsync_dir(self.final_path.parent)
        return size

    def abort(self) -> None:
        self._file.close()
        self._temp_path.unlink(missing_ok=True)


def read_snapshot(path: Path) -> tuple[SnapshotInfo, Iterator[tuple[str, Entry]]]:
    """Check the whole file, then return its info and an iterator over its entries.

    The file is read twice (verify, then load) so a damaged snapshot is refused before
    any entry reaches the store.
    """
    header, trailer = _verify(path)
    info = SnapshotInfo(
        redo_lsn=header["redo_lsn"],
        timeline=header["timeline"],
        created_at_ms=header["created_at_ms"],
        entries=trailer["entries"],
        revision=trailer["revision"],
    )
    return info, _entries(path)


def _frames(path: Path) -> Iterator[Frame]:
    with open(path, "rb") as file:
        if file.read(len(SNAPSHOT_MAGIC)) != SNAPSHOT_MAGIC:
            raise SnapshotError(path, "not a snapshot file (bad magic)")
        decoder = FrameDecoder(len(SNAPSHOT_MAGIC))
        while True:
            item = decoder.next_frame()
            if isinstance(item, Frame):
                yield item
            elif isinstance(item, CorruptFrame):
                raise SnapshotError(path, f"{item.reason} at offset {item.lsn}")
            else:
                assert item is NEED_DATA
                chunk = file.read(READ_CHUNK_BYTES)
                if not chunk:
                    if decoder.buffered_bytes:
                        raise SnapshotError(path, "file ends inside a frame")
                    return
                decoder.feed(chunk)


def _verify(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    frames = _frames(path)
    try:
        header = msgpack.unpackb(next(frames).payload)
    except StopIteration:
        raise SnapshotError(path, "no header") from None
    entries = 0
    last: Frame | None = None
    for frame in frames:
        if last is not None:
            entries += len(msgpack.unpackb(last.payload)) // _FIELDS_PER_ENTRY
        last = frame
    if last is None:
        raise SnapshotError(path, "no trailer: the snapshot is incomplete")
    trailer = msgpack.unpackb(last.payload)
    if not isinstance(trailer, dict) or trailer.get("entries") != entries:
        raise SnapshotError(path, f"trailer does not match the {entries} entries found")
    return header, trailer


def _entries(path: Path) -> Iterator[tuple[str, Entry]]:
    frames = _frames(path)
    next(frames)  # header
    previous: bytes | None = None
    for frame in frames:
        if previous is not None:  # the final frame is the trailer
            flat = msgpack.unpackb(previous, raw=False)
            for i in range(0, len(flat), _FIELDS_PER_ENTRY):
                yield flat[i], (flat[i + 1], flat[i + 2], flat[i + 3], flat[i + 4])
        previous = frame.payload
