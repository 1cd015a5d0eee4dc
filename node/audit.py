"""The audit log of authentication events: JSON lines in `data/log/audit.jsonl`, rotated by size.

Events are rare (logins, lockouts) and must survive a crash, so each is one small
O_APPEND write. Rotation renames `audit.jsonl` to `audit.jsonl.1` (and shifts older
files up to `keep`) once the file passes `max_bytes`. Callers never pass secrets:
passwords and tokens are not event fields.

Refusals of unauthenticated requests (`refused`) are aggregated, because anyone who can
reach the node can cause them and must not be able to rotate the audit trail away: per
window of `refusal_window_s`, the first refusal of each (event, address) is written in
full and the rest counted, one `refusals_aggregated` line per (event, address) with the
window's count when the window ends; and at most `refusal_window_max_lines` refusals are
written in full per window, beyond which they are only counted (a metric, and one
`refusals_unlogged` line with the count). So a flood writes at most about twice that many
lines per window whatever its rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from . import metrics

log = logging.getLogger(__name__)
# An aggregated line names at most this many of the user names that were tried.
AGGREGATED_USERS_MAX = 5
# A refused login's user name as written: real names are at most 64 characters (catalog
# documents), so a longer one is an attacker's string and its first 64 say enough.
REFUSED_USER_MAX_CHARS = 64


def _timestamp(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


@dataclass(slots=True)
class _Repeats:
    count: int = 1
    users: list[str] = field(default_factory=list)


class AuditLog:
    def __init__(
        self, path: Path, max_bytes: int, keep: int, refusal_window_s: float = 10.0, refusal_window_max_lines: int = 20
    ) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self.keep = keep  # rotated files kept: audit.jsonl.1 .. audit.jsonl.{keep}
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size
        self._window_s = refusal_window_s
        self._window_max_lines = refusal_window_max_lines
        self._window_started: float | None = None  # epoch seconds; None: no refusal in this window
        self._repeats: dict[tuple[str, str], _Repeats] = {}  # (event, address) written in full this window
        self._unlogged = 0
        self._window_number = 0

    def record(self, event: str, **fields: Any) -> None:
        self._end_window_if_over()  # keeps the file in time order
        self._write(event, fields)

    def refused(self, event: str, address: str, **fields: Any) -> None:
        """A refusal anyone could cause (bad password, throttled, host rules): aggregated."""
        self._end_window_if_over()
        if self._window_started is None:
            self._start_window()
        key = (event, address)
        user = fields.get("user")
        if isinstance(user, str):
            user = fields["user"] = user[:REFUSED_USER_MAX_CHARS]
        repeats = self._repeats.get(key)
        if repeats is not None:
            repeats.count += 1
            if isinstance(user, str) and user not in repeats.users and len(repeats.users) < AGGREGATED_USERS_MAX:
                repeats.users.append(user)
            metrics.AUDIT_REFUSALS.labels("aggregated").inc()
        elif len(self._repeats) < self._window_max_lines:
            self._repeats[key] = _Repeats(users=[user] if isinstance(user, str) else [])
            metrics.AUDIT_REFUSALS.labels("line").inc()
            self._write(event, {"address": address, **fields})
        else:
            self._unlogged += 1
            metrics.AUDIT_REFUSALS.labels("unlogged").inc()

    def _start_window(self) -> None:
        self._window_started = time.time()
        self._window_number += 1
        # End the window on time even if no other event comes along to end it. Without an event
        # loop (a tool or a test) the next event or close() ends it.
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_later(self._window_s, self._end_window_on_time, self._window_number)

    def _end_window_on_time(self, number: int) -> None:
        if number == self._window_number:  # not a later window that an event already started
            self._end_window_if_over(force=True)

    def _end_window_if_over(self, force: bool = False) -> None:
        started = self._window_started
        if started is None or (not force and time.time() < started + self._window_s):
            return
        window = {"window_started": _timestamp(started), "window_s": self._window_s}
        for (event, address), repeats in self._repeats.items():
            if repeats.count > 1:
                fields = {"of": event, "address": address, "count": repeats.count, "users": repeats.users, **window}
                self._write("refusals_aggregated", fields)
        if self._unlogged:
            self._write("refusals_unlogged", {"count": self._unlogged, **window})
        self._window_started, self._repeats, self._unlogged = None, {}, 0

    def _write(self, event: str, fields: dict[str, Any]) -> None:
        line = orjson.dumps({"ts": _timestamp(time.time()), "event": event, **fields})
        try:
            if self._size + len(line) + 1 > self._max_bytes:
                self._rotate()
            self._size += os.write(self._fd, line + b"\n")
        except OSError:
            # Losing an audit line must not fail the request; it must not pass unseen either.
            log.exception("audit log write failed", extra={"event": event})

    def _rotate(self) -> None:
        os.close(self._fd)
        for index in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = 0

    def close(self) -> None:
        self._end_window_if_over(force=True)
        os.close(self._fd)
