"""Data directories as an older version of the node could have left them, written offline into
a stopped node's WAL: for tests of what a node does with data it would no longer accept."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from kvstore.node import records
from kvstore.node.datadir import DataDir
from kvstore.node.recovery import recover
from kvstore.node.wal.policy import FsyncPolicy
from kvstore.node.wal.writer import WalWriter


def append_as_an_older_node_would(data_dir: Path, documents: dict[str, bytes]) -> None:
    """Log raw SET records, unchecked, at the end of a stopped node's WAL: what a node before
    catalog checks or key character rules (or a primary of an older version) could leave there."""

    async def append() -> None:
        recovered = recover(DataDir(data_dir))
        writer = WalWriter(
            data_dir / "WAL",
            timeline=recovered.timeline,
            end_lsn=recovered.end_lsn,
            segment_size_bytes=16 * 1024 * 1024,
            policy=FsyncPolicy.ALWAYS,
            interval_s=1.0,
            on_flushed=lambda lsn: None,
            on_failed=lambda error: None,
        )
        version, now_ms = recovered.store.revision, int(time.time() * 1000)
        for key, value in documents.items():
            version += 1
            writer.append(records.encode(records.set_record(key, value, version, now_ms, 0)))
        await writer.sync()
        await writer.close()

    asyncio.run(append())
