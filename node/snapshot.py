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
from .progress import Progress
from .store import Entry
from .wal.format import NEED_DATA, CorruptFrame, Frame, FrameDecoder, encode_frame

SNAPSHOT_MAGIC: Final = b"KVSNAP01"
READ_CHUNK_BYTES: Final = 1024 * 1024
SYNC_EVERY_BYTES: Final = 8 * 1024 * 1024
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
        self._unsynced_bytes = 0

    def write_chunk(self, frame: bytes, entries: int) -> None:
        self._file.write(frame)
        self.entries += entries
        self._unsynced_bytes += len(frame)
        if self._unsynced_bytes >= SYNC_EVERY_BYTES:
            # Flush as we go: one huge fsync at the end would stall every other write to the
            # disk (the WAL's included) for as long as it takes.
            self._file.flush()
            os.fdatasync(self._file.fileno())
            self._unsynced_bytes = 0

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


class SnapshotReader:
    """One pass over a snapshot: `info` from the header, then `entries()`.

    `entries()` checks every frame's CRC and, at the end, that the trailer is there and
    counts exactly the entries read (then `revision` holds the trailer's); it raises
    SnapshotError otherwise, so a caller loads into a store it can throw away.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._frames = _frames(path)
        try:
            header = msgpack.unpackb(next(self._frames).payload)
            self.info = SnapshotInfo(int(header["redo_lsn"]), int(header["timeline"]), int(header["created_at_ms"]))
        except StopIteration:
            raise SnapshotError(path, "no header") from None
        except (TypeError, KeyError, ValueError) as exc:
            raise SnapshotError(path, f"malformed header: {exc!r}") from None
        self.revision = 0

    def entries(self, progress: Progress | None = None) -> Iterator[tuple[str, Entry]]:
        previous: bytes | None = None
        entries = 0
        for frame in self._frames:
            if previous is not None:  # the final frame is the trailer, so chunks lag one behind
                flat = msgpack.unpackb(previous, raw=False)
                for i in range(0, len(flat), _FIELDS_PER_ENTRY):
                    yield flat[i], (flat[i + 1], flat[i + 2], flat[i + 3], flat[i + 4])
                entries += len(flat) // _FIELDS_PER_ENTRY
                if progress is not None:
                    progress.done = entries
            previous = frame.payload
        trailer = msgpack.unpackb(previous) if previous is not None else None
        if not isinstance(trailer, dict) or trailer.get("entries") != entries:
            raise SnapshotError(self.path, f"no trailer matching the {entries} entries read: incomplete or damaged")
        self.revision = int(trailer["revision"])


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
