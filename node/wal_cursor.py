"""Following the WAL as it grows: one cursor for every reader that tails it live.

A replica's stream follows the flushed LSN (what is durable here, committed or not: the
replica's confirmation is what commits it under synchronous replication); `GET
/v1/admin/wal/records` follows the committed LSN (never a write a crash or a failover
could undo). Both read up to their bound, then wait for the WAL to move past it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class WalProgress:
    """An event set when the flushed or the committed LSN next moves, one shared by all who
    wait (the engine notifies); a waiter re-reads its own bound after it."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def next_move(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None


class WalCursor:
    def __init__(self, progress: WalProgress, position: int, bound: Callable[[], int], stopping: asyncio.Event) -> None:
        self.position = position
        self.bound = bound  # how far this reader may read
        self._progress = progress
        self._stopping = stopping

    async def wait_for_more(self, timeout_s: float) -> bool:
        """True once there is WAL past `position` to read; False after `timeout_s` without
        any, or when the node stops."""
        moved = self._progress.next_move()  # taken before the bound is read: no move slips by unseen
        if self.bound() > self.position:
            return True
        if self._stopping.is_set():
            return False
        waits = (asyncio.ensure_future(moved.wait()), asyncio.ensure_future(self._stopping.wait()))
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        for waiting in waits:
            waiting.cancel()
        return self.bound() > self.position and not self._stopping.is_set()
