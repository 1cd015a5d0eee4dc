"""Reading the audit log back (node/audit.py writes it): the rotated files oldest first, then the
live file, then, when following, what is appended to it, across rotations. Used by the superuser
route behind `kvctl audit`.

Every line is one whole `os.write`, so a reader at the end of the live file sees either no
line or a whole one; a partial line (read mid-write) waits in the buffer for its end.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

READ_CHUNK_BYTES = 256 * 1024
# Opening the files races with a rotation renaming them; a rotation is rare, so retry.
OPEN_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class AuditFilter:
    since: str | None = None  # "YYYY-MM-DDTHH:MM:SSZ", the log's own form: its order is time order
    user: str | None = None  # the user acted on or the actor: `user`, `by`, or among aggregated `users`

    def matches(self, event: dict[str, Any]) -> bool:
        if self.since is not None and not str(event.get("ts", "")) >= self.since:
            return False
        if self.user is None:
            return True
        users = event.get("users")
        return self.user in (event.get("user"), event.get("by")) or (isinstance(users, list) and self.user in users)


def since_text(text: str) -> str:
    """An ISO 8601 time (no zone: UTC) in the log's form, whole seconds, as the log writes them."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r} (e.g. 2026-12-03T10:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AuditTail:
    """The audit log's lines in order, from its oldest retained line."""

    def __init__(self, path: Path, keep: int) -> None:
        self._path = path
        self._names = [path.with_name(f"{path.name}.{index}") for index in range(keep, 0, -1)] + [path]
        self._files = self._open_all()  # oldest first; the last one is followed
        self._buffer = b""
        # read() runs on a worker thread; close() may come from the event loop while it does.
        self._lock = threading.Lock()

    def _open_all(self) -> list[int]:
        for _ in range(OPEN_ATTEMPTS):
            fds = [fd for fd in (_open_if_exists(name) for name in self._names) if fd is not None]
            if [os.fstat(fd).st_ino for fd in fds] == self._inodes_now():
                return fds
            for fd in fds:
                os.close(fd)
        raise OSError(f"the audit log {self._path} kept rotating while it was opened")

    def _inodes_now(self) -> list[int]:
        inodes = []
        for name in self._names:
            try:
                inodes.append(name.stat().st_ino)
            except FileNotFoundError:
                continue
        return inodes

    def read(self) -> list[bytes]:
        """The whole lines available now, at most about READ_CHUNK_BYTES of them; [] at the end."""
        with self._lock:
            return self._read()

    def _read(self) -> list[bytes]:
        while self._files:
            data = os.read(self._files[0], READ_CHUNK_BYTES)
            if data:
                self._buffer += data
                lines = self._buffer.split(b"\n")
                self._buffer = lines.pop()
                if lines:
                    return lines
                continue
            if len(self._files) > 1:  # an older file ended: go on with the next
                os.close(self._files.pop(0))
                self._buffer = b""  # every file ends with a newline; a stray tail is dropped
                continue
            if not self._follow_rotation():
                return []
        return []

    def _follow_rotation(self) -> bool:
        """At the end of the followed file: if the log rotated, go on with the file that came
        after it (found by inode; the oldest left when the reader fell behind a whole file)."""
        current = os.fstat(self._files[0]).st_ino
        try:
            if self._path.stat().st_ino == current:
                return False
        except FileNotFoundError:
            return False  # mid-rotation: the new file is not there yet
        names = [name for name in self._names if name.exists()]
        inodes = [name.stat().st_ino for name in names]
        after = names[inodes.index(current) + 1] if current in inodes[:-1] else names[0]
        fd = _open_if_exists(after)
        if fd is None:
            return False
        os.close(self._files.pop(0))
        self._files.append(fd)
        self._buffer = b""
        return True

    def close(self) -> None:
        with self._lock:
            for fd in self._files:
                os.close(fd)
            self._files = []


def parse_line(line: bytes) -> dict[str, Any] | None:
    """An audit line as a JSON object; None for a line that is not one (never written by the node)."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def _open_if_exists(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
