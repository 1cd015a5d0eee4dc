"""A checkpoint reads the replication slots' WAL retention on the event loop, which is where
replicas connecting and reporting change the slots, never on the checkpoint thread."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from kvstore.node.checkpoint import Checkpointer
from kvstore.node.control import STATE_RUNNING, Control
from kvstore.node.datadir import DataDir
from kvstore.node.engine import Engine
from kvstore.node.store import Store
from kvstore.node.wal.policy import FsyncPolicy
from kvstore.node.wal.segments import list_segments
from kvstore.node.wal.writer import WalWriter
from kvstore.replication.slots import SlotRegistry


def test_slot_retention_is_read_on_the_event_loop_and_keeps_the_wal_a_slot_needs(tmp_path: Path) -> None:
    datadir = DataDir(tmp_path)
    for folder in (datadir.wal, datadir.base):
        folder.mkdir()
    registry = SlotRegistry(tmp_path / "slots.json", max_keep_bytes=1 << 30)
    threads: list[int] = []

    def retention(redo_lsn: int) -> int:
        threads.append(threading.get_ident())
        return registry.retention(redo_lsn, writer.end_lsn)

    async def main() -> None:
        nonlocal writer
        engine = Engine(Store())
        writer = WalWriter(
            datadir.wal,
            timeline=1,
            end_lsn=0,
            segment_size_bytes=4096,
            policy=FsyncPolicy.ALWAYS,
            interval_s=1.0,
            on_flushed=engine.on_wal_flushed,
            on_failed=engine.on_wal_failed,
        )
        engine.attach(writer)
        control = Control(1, 1, 0, None, 0, STATE_RUNNING)
        checkpointer = Checkpointer(engine, datadir, control, snapshots_keep=2)
        checkpointer.wal_holds["slots"] = retention
        try:
            registry.acquire("r1", 0)  # a replica that has received nothing yet
            for n in range(200):
                await engine.put(f"k{n}", b"v" * 100)
            # Replicas come and go while the checkpoint runs: the slots change on this loop.
            joining = asyncio.ensure_future(_replicas_joining(registry))
            result = await checkpointer.checkpoint("test")
            await joining
            assert threads == [threading.get_ident()]  # on the loop, not the checkpoint thread
            assert result.segments_removed == 0  # r1 still needs the WAL from 0
            assert list_segments(datadir.wal)[0].start_lsn == 0
            registry.slots.clear()
            await engine.put("one-more", b"v")  # else the snapshot is current and nothing runs
            assert (await checkpointer.checkpoint("again")).segments_removed > 0  # no slot: recycled
        finally:
            checkpointer.close()
            await writer.close()

    writer: WalWriter
    asyncio.run(main())


async def _replicas_joining(registry: SlotRegistry) -> None:
    for n in range(50):
        registry.acquire(f"joining-{n}", 1 << 40)
        await asyncio.sleep(0)
