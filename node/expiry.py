"""The primary's TTL expirer: a DEL record for each key whose expiry has passed.

Reads hide an expired key at once (lazy expiry, store.py); the DEL removes it for good, and
is replicated, so replicas never expire keys on their own clocks.
"""

from __future__ import annotations

import asyncio
import logging

from . import metrics
from .engine import Engine
from .errors import Unavailable
from .writes import now_ms

log = logging.getLogger(__name__)


def expire_due(engine: Engine, limit: int) -> int:
    """Log a DEL for each expired key (not waiting for commit); returns how many."""
    if engine.read_only_reason is not None:
        return 0
    now = now_ms()
    expired = 0
    for key, _version in engine.store.due_expiries(now, limit):
        if engine.pending_lsn(key) is not None:
            # A newer write is in flight and decides the key's fate; should it fail, the
            # key must still be reaped, so it goes back in the queue.
            engine.store.requeue_expiry(key, now + 1000)
            continue
        engine.log_expired(key)
        expired += 1
    metrics.TTL_EXPIRED_KEYS.inc(expired)
    return expired


async def run_expirer(engine: Engine, interval_s: float, batch_keys: int) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            while expire_due(engine, batch_keys) == batch_keys:
                await asyncio.sleep(0)  # a backlog: keep going, but let requests in
        except Unavailable:
            continue
        except Exception:
            log.exception("expirer pass failed; will retry")
