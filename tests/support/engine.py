"""An engine with its WAL on disk, in process: the node's storage without the node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from kvstore.node.engine import Engine
from kvstore.node.store import Store
from kvstore.node.wal.policy import FsyncPolicy
from kvstore.node.wal.writer import WalWriter


@asynccontextmanager
async def engine_on_disk(
    wal_dir: Path, policy: FsyncPolicy = FsyncPolicy.ALWAYS, segment_size_bytes: int = 1 << 20
) -> AsyncIterator[Engine]:
    """An engine writing a new WAL (timeline 1, from LSN 0) into `wal_dir`; the writer is
    closed on the way out."""
    engine = Engine(Store())
    writer = WalWriter(
        wal_dir,
        timeline=1,
        end_lsn=0,
        segment_size_bytes=segment_size_bytes,
        policy=policy,
        interval_s=1.0,
        on_flushed=engine.on_wal_flushed,
        on_failed=engine.on_wal_failed,
    )
    engine.attach(writer)
    try:
        yield engine
    finally:
        await writer.close()
