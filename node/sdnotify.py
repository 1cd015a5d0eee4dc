"""systemd's notify protocol (sd_notify(3)) by hand: each message is one datagram of
`KEY=value` lines to the AF_UNIX socket NOTIFY_SOCKET names, a path or, starting with '@',
an abstract address. Without NOTIFY_SOCKET (not run by systemd as Type=notify) every call
does nothing. The watchdog interval is half of WATCHDOG_USEC, and pings go out only when
WATCHDOG_PID is unset or names this process (systemd sets it for the main process only).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None


def _watchdog_interval_s(environ: Mapping[str, str]) -> float | None:
    usec, pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (e.g. a parent that execs us)
    return int(usec) / 1_000_000 / 2


class Notifier:
    """Messages to the service manager; every method is a no-op without NOTIFY_SOCKET."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        raw = environ.get("NOTIFY_SOCKET", "")
        self._address = _address(raw) if raw else None
        if raw and self._address is None:
            log.warning("NOTIFY_SOCKET is neither a path nor an abstract address; not notifying", extra={"value": raw})
        self.watchdog_interval_s = _watchdog_interval_s(environ) if self._address is not None else None
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> None:
        """One datagram of `KEY=value` lines. Never blocks the loop: a message the manager
        cannot take right now is dropped and logged (the next status or ping follows)."""
        if self._address is None:
            return
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)
        try:
            self._socket.sendto("\n".join(fields).encode(), self._address)
        except OSError as error:
            log.warning("could not notify the service manager", extra={"fields": fields[:1], "error": str(error)})

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def extend_timeout(self, seconds: float) -> None:
        """Push the start (or stop) timeout to `seconds` from now: the work is progressing."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def reloading(self, status: str) -> None:
        self.send("RELOADING=1", f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
