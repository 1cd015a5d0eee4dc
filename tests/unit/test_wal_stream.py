"""What a replica gets from its primary (replication/primary.py), in process: the stream of a
real WAL on disk, read from the writer's memory or from the segment files, the refusals
before a stream starts, the ends of one, and feedback. No HTTP: the node is a stub around a
real engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from kvstore.node import records
from kvstore.node.checkpoint import Checkpointer
from kvstore.node.config import Settings
from kvstore.node.control import STATE_RUNNING, Control
from kvstore.node.datadir import DataDir
from kvstore.node.engine import Engine
from kvstore.node.errors import LsnBeyondWalEnd
from kvstore.node.wal import segments
from kvstore.node.wal.format import SEGMENT_HEADER_BYTES
from kvstore.node.wal.tail import WalTail
from kvstore.replication.primary import Primary
from kvstore.replication.protocol import (
    Keepalive,
    Message,
    Refusal,
    Refused,
    SegmentStart,
    StreamDecoder,
    StreamEnd,
    WalData,
    split_frames,
)
from kvstore.replication.timelines import Switch
from support.engine import engine_on_disk

SYSTEM = 7310000000000000001
SEGMENT_BYTES = 8192
WRITES = 200  # about 30 KiB of WAL: four segments


@dataclass
class CheckpointerStub:
    control: Control


@dataclass
class PrimaryNode:
    """What the primary is handed: the node's parts, and the stub stands for its role
    (primary.PrimaryRole: timeline, history, the fence)."""

    datadir: DataDir
    engine: Engine
    settings: Settings = field(default_factory=lambda: Settings(replication_keepalive_s=0.05))
    checkpointer: CheckpointerStub = field(
        default_factory=lambda: CheckpointerStub(Control(SYSTEM, 1, 0, None, 0, STATE_RUNNING))
    )
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    timeline: int = 1
    history: list[Switch] = field(default_factory=list)
    fenced_reason: str | None = None

    def fence(self, reason: str) -> None:
        self.fenced_reason = reason


@asynccontextmanager
async def primary_with_wal(tmp_path: Path) -> AsyncIterator[Primary]:
    """A primary whose WAL holds WRITES puts of keys k0, k1, ... over several segments."""
    datadir = DataDir(tmp_path)
    datadir.wal.mkdir()
    async with engine_on_disk(datadir.wal, segment_size_bytes=SEGMENT_BYTES) as engine:
        for n in range(WRITES):
            await engine.put(f"k{n}", b"v" * 100)
        node = PrimaryNode(datadir, engine)
        checkpointer = cast(Checkpointer, node.checkpointer)
        yield Primary(node.settings, datadir, engine, checkpointer, node.stopping, role=node)


def run(tmp_path: Path, body: Callable[[Primary], Awaitable[None]]) -> None:
    async def main() -> None:
        async with primary_with_wal(tmp_path) as primary:
            await body(primary)

    asyncio.run(main())


def node_of(primary: Primary) -> PrimaryNode:
    return cast(PrimaryNode, primary._role)  # the stub handed in as its role


async def received(primary: Primary, from_lsn: int, slot: str = "r1") -> list[Message]:
    """The messages of a stream from `from_lsn` until it has sent all the WAL (its first
    keepalive) or ends."""
    decoder = StreamDecoder()
    messages: list[Message] = []
    stream = primary.stream(slot, from_lsn, "127.0.0.2")
    async for chunk in stream:
        for message in decoder.feed(chunk):
            if isinstance(message, Keepalive):
                assert message.write_lsn == node_of(primary).engine.write_lsn and message.timeline == 1
                await stream.aclose()
                return messages
            messages.append(message)
            if isinstance(message, StreamEnd):
                return messages
    raise AssertionError("the stream ended without a word")


def keys_in(messages: list[Message]) -> list[str]:
    data = [message for message in messages if isinstance(message, WalData)]
    decoded = [records.decode(frame.payload) for message in data for frame in split_frames(message)]
    return [record[1] for record in decoded if record[0] == records.SET]


def assert_is_the_wal_on_disk(messages: list[Message], wal_dir: Path) -> None:
    """Segment starts where segments start, then their frames, byte for byte, without a gap."""
    on_disk = segments.list_segments(wal_dir)
    position, by_segment = None, {}
    for message in messages:
        if isinstance(message, SegmentStart):
            assert message.timeline == 1
            position = message.start_lsn + SEGMENT_HEADER_BYTES
            by_segment[message.start_lsn] = b""
        else:
            assert isinstance(message, WalData) and message.lsn == position, (message, position)
            by_segment[max(by_segment)] += message.frames
            position = message.end_lsn
    assert sorted(by_segment) == [segment.start_lsn for segment in on_disk]
    for segment in on_disk:
        assert by_segment[segment.start_lsn] == segment.path.read_bytes()[SEGMENT_HEADER_BYTES:]


def test_a_stream_from_the_start_is_the_wal_on_disk_from_memory_or_from_the_files(tmp_path: Path) -> None:
    async def body(primary: Primary) -> None:
        wal_dir = node_of(primary).datadir.wal
        assert len(segments.list_segments(wal_dir)) >= 3
        from_memory = await received(primary, 0)
        assert keys_in(from_memory) == [f"k{n}" for n in range(WRITES)]
        assert_is_the_wal_on_disk(from_memory, wal_dir)
        writer = node_of(primary).engine.writer
        assert writer is not None
        writer.recent = WalTail()  # nothing in memory: every read goes to the segment files
        from_disk = await received(primary, 0)
        assert from_disk == from_memory

    run(tmp_path, body)


def test_a_stream_from_a_record_boundary_starts_with_that_record(tmp_path: Path) -> None:
    async def body(primary: Primary) -> None:
        everything = await received(primary, 0)
        frames = [frame for message in everything if isinstance(message, WalData) for frame in split_frames(message)]
        middle = frames[WRITES // 2].lsn
        rest = await received(primary, middle, slot="r2")
        assert isinstance(rest[0], WalData) and rest[0].lsn == middle
        assert keys_in(rest) == [f"k{n}" for n in range(WRITES // 2, WRITES)]
        slot = primary.slots.slots["r2"]
        assert (slot.restart_lsn, slot.streams, slot.address) == (middle, 0, "127.0.0.2")

    run(tmp_path, body)


def test_a_stream_whose_slot_is_lost_or_whose_node_is_fenced_ends_with_the_reason(tmp_path: Path) -> None:
    async def body(primary: Primary) -> None:
        decoder = StreamDecoder()
        stream = primary.stream("r1", 0, "127.0.0.2")
        assert isinstance(decoder.feed(await anext(stream))[0], SegmentStart)
        primary.slots.slots["r1"].lost = True  # a checkpoint found it over its bound meanwhile
        lost = StreamEnd(Refusal.SLOT_LOST, "this replica's slot was lost; take a base backup")
        assert decoder.feed(await anext(stream)) == [lost]
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        assert not primary.slots.acquire("r1", 0).lost  # the next stream starts a new slot
        node_of(primary).fence("timeline 2 exists")
        assert await received(primary, 0, slot="r2") == [StreamEnd(Refusal.NOT_PRIMARY, "timeline 2 exists")]

    run(tmp_path, body)


def test_a_stream_whose_wal_was_recycled_meanwhile_ends_so(tmp_path: Path) -> None:
    async def body(primary: Primary) -> None:
        wal_dir = node_of(primary).datadir.wal
        writer = node_of(primary).engine.writer
        assert writer is not None
        writer.recent = WalTail()
        segments.recycle_segments(wal_dir, segments.list_segments(wal_dir)[-1].start_lsn)
        (ended,) = await received(primary, 0)
        assert isinstance(ended, StreamEnd) and ended.code == Refusal.WAL_REMOVED

    run(tmp_path, body)


def refusal(primary: Primary, from_lsn: int, timeline: int = 1, system: str | None = str(SYSTEM)) -> Refused:
    with pytest.raises(Refused) as refused:
        primary.check_stream(from_lsn, timeline, system)
    return refused.value


def test_check_stream_refuses_what_the_replica_cannot_follow(tmp_path: Path) -> None:
    async def body(primary: Primary) -> None:
        flushed = node_of(primary).engine.write_lsn
        primary.check_stream(0, 1, str(SYSTEM))  # the whole WAL is there
        primary.check_stream(flushed, 1, None)  # and its end: a replica that has everything
        assert refusal(primary, 0, system="1").refusal == Refusal.SYSTEM_MISMATCH
        assert refusal(primary, flushed + 1).refusal == Refusal.AHEAD
        wal_dir = node_of(primary).datadir.wal
        segments.recycle_segments(wal_dir, segments.list_segments(wal_dir)[-1].start_lsn)
        assert refusal(primary, 0).refusal == Refusal.WAL_REMOVED
        assert node_of(primary).fenced_reason is None

    run(tmp_path, body)


def test_a_replica_on_an_older_timeline_may_follow_up_to_where_it_ended(tmp_path: Path) -> None:
    async def body(primary: Primary) -> None:
        node = node_of(primary)
        node.timeline, node.history = 2, [Switch(parent=1, switch_lsn=5000, time_ms=0)]
        primary.check_stream(4000, 1, str(SYSTEM))
        primary.check_stream(5000, 1, str(SYSTEM))
        diverged = refusal(primary, 5001, timeline=1)
        assert diverged.refusal == Refusal.DIVERGED and diverged.details == {"switch_lsn": 5000}
        assert refusal(primary, 10, timeline=3).refusal == Refusal.FENCED  # a newer timeline than ours
        assert node.fenced_reason is not None and "timeline 3" in node.fenced_reason
        assert refusal(primary, 10).refusal == Refusal.NOT_PRIMARY  # fenced now

    run(tmp_path, body)


def feedback(lsn: int, slot: str = "r1", timeline: int = 1) -> dict[str, Any]:
    return {"slot": slot, "timeline": timeline, "write_lsn": lsn, "flush_lsn": lsn, "apply_lsn": lsn}


def test_feedback_moves_the_slot_and_is_refused_beyond_the_wal_end(tmp_path: Path) -> None:
    async def body(primary: Primary) -> None:
        end = node_of(primary).engine.write_lsn
        with pytest.raises(Refused) as no_slot:
            primary.feedback(feedback(100), "127.0.0.2")
        assert no_slot.value.refusal == Refusal.NO_SLOT
        primary.slots.acquire("r1", 0)
        assert primary.feedback(feedback(100), "127.0.0.2") == {"timeline": 1, "write_lsn": end}
        assert primary.slots.slots["r1"].restart_lsn == 100
        with pytest.raises(LsnBeyondWalEnd, match="flush_lsn"):
            primary.feedback(feedback(end + 1), "127.0.0.2")
        assert primary.slots.slots["r1"].restart_lsn == 100  # unchanged
        primary.feedback(feedback(200, timeline=2), "127.0.0.2")
        assert node_of(primary).fenced_reason == "replica 'r1' reports timeline 2, newer than this node's"

    run(tmp_path, body)
