"""The request body timeout without a timer per request.

`asyncio.wait_for` around every body read cost a PUT about a tenth of the event loop's time
(a task, a weak-set entry, a timer and a waiter per request; bench/results/RESULTS-put-path.md).
Every body gets the same timeout, so deadlines are kept in buckets of TICK_S (a timing wheel):
a request adds its task to the bucket its deadline falls in and takes it out when the body is
in; one timer per bucket in use cancels the tasks left in it. A deadline may so fire up to
TICK_S late, never early.
"""

from __future__ import annotations

import asyncio
import math

TICK_S = 0.1


class BodyDeadlines:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._buckets: dict[int, set[asyncio.Task[object]]] = {}
        self._expired: set[asyncio.Task[object]] = set()  # cancelled here, not yet told so

    def start(self, task: asyncio.Task[object]) -> int:
        """The task is reading a body from now on; returns the bucket to pass to `finish`."""
        loop = asyncio.get_running_loop()
        tick = math.ceil((loop.time() + self.timeout_s) / TICK_S)
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = set()
            loop.call_at(tick * TICK_S, self._expire, tick)
        bucket.add(task)
        return tick

    def finish(self, tick: int, task: asyncio.Task[object]) -> None:
        bucket = self._buckets.get(tick)
        if bucket is not None:
            bucket.discard(task)

    def expired(self, task: asyncio.Task[object]) -> bool:
        """Whether a CancelledError the task got came from its deadline (asked once, after it)."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()  # the cancellation is handled: the task goes on to answer 408
        return True

    def _expire(self, tick: int) -> None:
        for task in self._buckets.pop(tick, ()):
            self._expired.add(task)
            task.cancel()
