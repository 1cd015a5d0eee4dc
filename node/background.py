"""The node's own periodic work: checkpoints when due, the event loop's lag, the WAL's fsync
under the interval policy (expiry is a primary's: replication/roles.py), and systemd's
watchdog pings (the node starts that one itself, before recovery)."""

from __future__ import annotations

import asyncio
import time

from . import metrics
from .checkpoint import Checkpointer
from .config import Settings
from .engine import Engine
from .sdnotify import Notifier
from .supervisor import Spawn
from .wal.policy import FsyncPolicy

LOOP_LAG_SAMPLE_S = 0.01


def start(spawn: Spawn, settings: Settings, engine: Engine, checkpointer: Checkpointer) -> None:
    spawn("checkpointer", lambda: schedule_checkpoints(settings, engine, checkpointer))
    spawn("loop-lag", measure_loop_lag)
    writer = engine.writer
    assert writer is not None
    if settings.fsync is FsyncPolicy.INTERVAL:
        spawn("wal-interval-sync", writer.run_interval_sync)


async def schedule_checkpoints(settings: Settings, engine: Engine, checkpointer: Checkpointer) -> None:
    """A checkpoint every `checkpoint_interval_s`, or sooner once `checkpoint_wal_bytes` of WAL
    have been written since the last one's redo LSN."""
    last = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        writer = engine.writer
        assert writer is not None
        wal_since_redo = writer.end_lsn - checkpointer.control.redo_lsn
        due = time.monotonic() - last >= settings.checkpoint_interval_s
        if due or wal_since_redo >= settings.checkpoint_wal_bytes:
            await checkpointer.checkpoint("wal size" if not due else "timed")
            last = time.monotonic()


async def measure_loop_lag() -> None:
    """Sample how late the loop runs a timer: a stall of the loop delays every request."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + LOOP_LAG_SAMPLE_S
        await asyncio.sleep(LOOP_LAG_SAMPLE_S)
        metrics.EVENT_LOOP_LAG_SECONDS.observe(max(0.0, loop.time() - due))


async def ping_watchdog(notifier: Notifier) -> None:
    """WATCHDOG=1 every half WATCHDOG_USEC, from the event loop itself: a loop that is stuck
    stops the pings, and systemd kills and restarts the node (WatchdogSec=)."""
    interval_s = notifier.watchdog_interval_s
    assert interval_s is not None
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval_s)
