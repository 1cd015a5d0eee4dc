"""Requests waiting for an LSN to commit, in a heap by LSN.

Each waiter is released when its own LSN commits, whatever was asked before it. A waiter
that gave up (a timeout, a client gone) is dropped lazily, as asyncio drops cancelled
timers: the heap is rebuilt once such dead entries are the majority, so it never grows
without bound.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

ABANDONED_MIN = 64  # below this many abandoned waiters, dropping them is not worth a rebuild


class CommitWaiters:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()  # ties on an LSN never compare futures
        self._abandoned = 0

    def __len__(self) -> int:
        """Waiters in the heap (abandoned ones not yet dropped included)."""
        return len(self._heap)

    async def wait(self, lsn: int) -> None:
        """Until `release_up_to` reaches `lsn`, or `fail_all` raises its error here."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (lsn, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            self._abandon()
            raise

    def _abandon(self) -> None:
        self._abandoned += 1
        if self._abandoned > ABANDONED_MIN and self._abandoned * 2 > len(self._heap):
            self._heap = [waiter for waiter in self._heap if not waiter[2].done()]
            heapq.heapify(self._heap)
            self._abandoned = 0

    def release_up_to(self, lsn: int) -> None:
        heap = self._heap
        while heap and heap[0][0] <= lsn:
            future = heapq.heappop(heap)[2]
            if future.done():
                self._abandoned = max(0, self._abandoned - 1)
            else:
                future.set_result(None)

    def fail_all(self, error: BaseException) -> None:
        heap, self._heap, self._abandoned = self._heap, [], 0
        for _lsn, _order, future in heap:
            if not future.done():
                future.set_exception(error)
