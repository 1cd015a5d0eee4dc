"""A node's background tasks (checkpoints, expiry, replication, peer checks), each run until
it returns: an exception is logged and the task started again, backing off, so one failure
never silently ends work the node depends on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

RESTART_DELAY_MAX_S = 30.0

Spawn = Callable[[str, Callable[[], Awaitable[object]]], None]  # Supervisor.spawn


class Supervisor:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def spawn(self, name: str, run: Callable[[], Awaitable[object]]) -> None:
        self._tasks.append(asyncio.create_task(_supervise(name, run), name=name))

    def cancel(self, name: str) -> None:
        for task in self._tasks:
            if task.get_name() == name:
                task.cancel()

    async def stop(self) -> None:
        """Cancel every task and wait until all have ended."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _supervise(name: str, run: Callable[[], Awaitable[object]]) -> None:
    delay_s = 1.0
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background task failed; restarting", extra={"task": name, "delay_s": delay_s})
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, RESTART_DELAY_MAX_S)
