"""What a starting node tells its service manager (sdnotify.py): a STATUS line for each step
of the start, with its progress where the step counts it, and EXTEND_TIMEOUT_USEC while the
step is making progress. So the unit's TimeoutStartSec bounds a start that is stuck, not one
that is long (a big WAL replay, a big base backup), as PostgreSQL's unit wants with no timeout.
"""

from __future__ import annotations

import asyncio

from .progress import Progress
from .sdnotify import Notifier

POLL_S = 1.0  # how often the status line is refreshed (only sent when it changed)
EXTEND_EVERY_S = 5.0
EXTEND_BY_S = 30.0  # several missed extensions before the start times out


class StartReport:
    def __init__(self, notifier: Notifier | None = None) -> None:
        self.notifier = notifier or Notifier()  # the node's, from NOTIFY_SOCKET unless given
        self._step = "starting"
        self._unit = ""
        self._sent = ""  # the last status line sent: each goes out once
        self.progress = Progress()
        self._extended_at: float | None = None
        self._mark: tuple[Progress, int] | None = None  # the step and its count when last looked at

    def step(self, text: str, unit: str = "") -> Progress:
        """A new step (on the event loop); returns the Progress the step should bump, counted
        in `unit` (a step with no unit counts nothing: the running loop is its only sign of life)."""
        self._step, self._unit, self.progress = text, unit, Progress()
        self._send_status()
        return self.progress

    def text(self) -> str:
        progress = self.progress
        if not self._unit:
            return self._step
        if progress.total:
            return f"{self._step}: {progress.done} of {progress.total} {self._unit}"
        return f"{self._step}: {progress.done} {self._unit}"

    def _send_status(self) -> None:
        text = self.text()
        if text != self._sent:
            self.notifier.status(text)
            self._sent = text

    def tick(self, now: float) -> None:
        """The status line if it changed; every EXTEND_EVERY_S (from the first tick), an
        extension of the start timeout if the step's count moved since (or it has none)."""
        self._send_status()
        if self._extended_at is None:
            self._extended_at = now
        if now - self._extended_at < EXTEND_EVERY_S:
            return
        mark = (self.progress, self.progress.done)
        if not self._unit or mark != self._mark:
            self.notifier.extend_timeout(EXTEND_BY_S)
        self._mark, self._extended_at = mark, now

    async def run(self) -> None:
        """`tick` every POLL_S until cancelled (once the node is ready)."""
        loop = asyncio.get_running_loop()
        while True:
            self.tick(loop.time())
            await asyncio.sleep(POLL_S)
