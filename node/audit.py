"""The audit log of authentication events: JSON lines in `data/log/audit.jsonl`, rotated by size.

Events are rare (logins, lockouts) and must survive a crash, so each is one small
O_APPEND write. Rotation renames `audit.jsonl` to `audit.jsonl.1` (and shifts older
files up to `keep`) once the file passes `max_bytes`. Callers never pass secrets:
passwords and tokens are not event fields.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._keep = keep
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size

    def record(self, event: str, **fields: Any) -> None:
        line = orjson.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **fields})
        try:
            if self._size + len(line) + 1 > self._max_bytes:
                self._rotate()
            self._size += os.write(self._fd, line + b"\n")
        except OSError:
            # Losing an audit line must not fail the request; it must not pass unseen either.
            log.exception("audit log write failed", extra={"event": event})

    def _rotate(self) -> None:
        os.close(self._fd)
        for index in range(self._keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = 0

    def close(self) -> None:
        os.close(self._fd)
