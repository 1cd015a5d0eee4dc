"""The primary's side of replication: WAL streams, base backups, feedback, synchronous commit.

A stream sends the WAL exactly as it lies on disk (segment starts and whole frames, see
protocol.py), and only up to the flushed LSN, so a replica never holds a write the
primary could still lose. Under synchronous commit a write commits (becomes readable and
is acknowledged) only once the synchronous replicas confirm it. A stream that has caught up reads the live tail from the
writer's memory (node/wal/tail.py, the newest 16 MiB); one that is behind reads segment
files in a thread. Each holds one batch (<= 1 MiB) at a time: a slow replica only falls
behind itself, never slows the primary or the others, and its slot keeps the WAL it
still needs, up to a bound.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol

from kvstore.node import metrics
from kvstore.node.checkpoint import Checkpointer
from kvstore.node.config import Settings
from kvstore.node.datadir import DataDir
from kvstore.node.engine import Engine
from kvstore.node.errors import GatewayTimeout, LsnBeyondWalEnd, Unavailable
from kvstore.node.wal import segments
from kvstore.node.wal.format import format_lsn
from kvstore.node.wal.tail import TailRead
from kvstore.node.wal_cursor import WalCursor

from . import protocol, timelines
from .protocol import Refusal, Refused
from .slots import Slot, SlotRegistry

log = logging.getLogger(__name__)

LAG_SAMPLE_INTERVAL_S = 0.01
KEEPALIVE_MIN_INTERVAL_S = 0.1  # when caught up under load, at most this often
BASE_BACKUP_CHUNK_BYTES = 1024 * 1024
FEEDBACK_LSNS = ("write_lsn", "flush_lsn", "apply_lsn")


class PrimaryRole(Protocol):
    """What the primary's machinery reads of the node's role, and the fence it may raise."""

    @property
    def timeline(self) -> int: ...

    @property
    def history(self) -> list[timelines.Switch]: ...

    @property
    def fenced_reason(self) -> str | None: ...

    def fence(self, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class BaseBackup:
    headers: list[tuple[str, str]]
    chunks: AsyncGenerator[bytes, None]


def _messages_for(read: TailRead) -> bytes:
    """A read of the WAL (from memory or disk) as stream messages."""
    out = b""
    if read.segment_start is not None:
        out += protocol.encode_segment_start(read.segment_start.lsn, read.segment_start.timeline)
    if read.frames:
        out += protocol.encode_wal(read.end_lsn - len(read.frames), read.frames)
    return out


class Primary:
    def __init__(
        self,
        settings: Settings,
        datadir: DataDir,
        engine: Engine,
        checkpointer: Checkpointer,
        stopping: asyncio.Event,
        role: PrimaryRole,
    ) -> None:
        self._settings = settings
        self._datadir = datadir
        self._engine = engine
        self._checkpointer = checkpointer
        self._stopping = stopping
        self._role = role
        self.slots = SlotRegistry(datadir.root / "replication" / "slots.json", settings.max_slot_wal_keep_bytes)
        self.sync_count, self.sync_names = settings.sync_replicas
        self.sync_mode = settings.synchronous_commit

    def install(self) -> None:
        writer = self._engine.writer
        assert writer is not None
        self._checkpointer.wal_holds["slots"] = lambda redo_lsn: self.slots.retention(redo_lsn, writer.end_lsn)
        if self.sync_mode != "local":
            self._engine.replicas_confirmed = self.confirmed_lsn
            self._engine.commit_gate = self.wait_for_replicas
            self._engine.hold_until_confirmed()

    async def run_lag_sampler(self) -> None:
        engine, lag = self._engine, self.slots.lag
        while True:
            lag.sample(engine.write_lsn, time.time())
            await asyncio.sleep(LAG_SAMPLE_INTERVAL_S)

    # -- synchronous commit ------------------------------------------------------------

    def confirmed_lsn(self) -> int:
        """The highest LSN that `sync_count` of the synchronous replicas hold (written, or
        applied under remote_apply); 0 while fewer than that many have reported."""
        positions = sorted(
            (slot.apply_lsn if self.sync_mode == "remote_apply" else slot.write_lsn)
            for name in self.sync_names
            if (slot := self.slots.slots.get(name)) is not None
        )
        return positions[-self.sync_count] if len(positions) >= self.sync_count else 0

    async def wait_for_replicas(self, lsn: int) -> None:
        """The engine's commit wait under synchronous commit, bounded by its timeout."""
        timeout_s = self._settings.synchronous_commit_timeout_s or None
        started = time.perf_counter()
        try:
            await asyncio.wait_for(self._engine.wait_for_commit(lsn), timeout_s)
        except TimeoutError:
            raise GatewayTimeout(
                f"durable here at {format_lsn(lsn)}, but not confirmed by {self.sync_count} of "
                f"{', '.join(self.sync_names)} ({self.sync_mode}) within {timeout_s} s; the write may or may not "
                "survive a failover"
            ) from None
        finally:
            metrics.SYNC_COMMIT_WAIT_SECONDS.observe(time.perf_counter() - started)

    def fail_sync_waiters(self, reason: str) -> None:
        """Fenced or stopping: no replica confirmation will come; the outcome is unknown to the client."""
        self._engine.fail_waiters(Unavailable(f"written here but not confirmed by replicas: {reason}"))

    # -- requests from replicas -----------------------------------------------------------

    def not_to_follow(self) -> str | None:
        """Why replicas must not follow this node: fenced, or its WAL failed. Writes held while a
        peer cannot be checked (failover.PeerWatch) are not a reason: the node is still the
        primary of its timeline, and its replicas keep what it has."""
        if self._role.fenced_reason is not None:
            return self._role.fenced_reason
        return self._engine.read_only_reason if self._engine.wal_failed else None

    def feedback(self, document: dict[str, Any], address: str) -> dict[str, Any]:
        role = self._role
        timeline = int(document["timeline"])
        if timeline > role.timeline:
            role.fence(f"replica {document['slot']!r} reports timeline {timeline}, newer than this node's")
        writer = self._engine.writer
        assert writer is not None
        end_lsn = writer.end_lsn
        beyond = [
            f"{name} {format_lsn(int(document[name]))}" for name in FEEDBACK_LSNS if int(document[name]) > end_lsn
        ]
        if beyond:
            # A replica cannot have received what this node never wrote: such a position would
            # show in the slot and count synchronous commits as confirmed.
            raise LsnBeyondWalEnd(
                f"feedback for slot {document['slot']!r} reports {', '.join(beyond)}, beyond this primary's WAL end "
                f"{format_lsn(end_lsn)}; the slot is unchanged"
            )
        slot = self.slots.feedback(
            str(document["slot"]),
            timeline,
            int(document["write_lsn"]),
            int(document["flush_lsn"]),
            int(document["apply_lsn"]),
            address,
        )
        if slot is None:
            raise Refused(Refusal.NO_SLOT, f"no replication slot {document['slot']!r}; open a stream first")
        if self.sync_mode != "local":
            self._engine.on_replicas_confirmed()
        return {"timeline": role.timeline, "write_lsn": self._engine.write_lsn}

    def check_stream(self, from_lsn: int, timeline: int, system_identifier: str | None) -> None:
        """Refuse (409, with a code) a stream the replica cannot follow from `from_lsn`."""
        role, engine = self._role, self._engine
        ours = str(self._checkpointer.control.system_identifier)
        if system_identifier is not None and system_identifier != ours:
            raise Refused(Refusal.SYSTEM_MISMATCH, f"this node is system {ours}, the replica {system_identifier}")
        if timeline > role.timeline:
            role.fence(f"a replica streams on timeline {timeline}, newer than this node's {role.timeline}")
            raise Refused(Refusal.FENCED, f"this node's timeline {role.timeline} was superseded by {timeline}")
        refusal = self.not_to_follow()
        if refusal is not None:
            raise Refused(Refusal.NOT_PRIMARY, f"this node is not a primary to follow: {refusal}")
        if timeline < role.timeline:
            ended = timelines.end_of(role.history, timeline)
            if ended is None or from_lsn > ended:
                raise Refused(
                    Refusal.DIVERGED,
                    f"timeline {timeline} ended at {format_lsn(ended or 0)} on this node; the replica's WAL "
                    f"goes on to {format_lsn(from_lsn)}: it must rewind (kvctl rejoin) or take a base backup",
                    switch_lsn=ended,
                )
        if from_lsn > engine.write_lsn:
            raise Refused(
                Refusal.AHEAD,
                f"the replica is at {format_lsn(from_lsn)}, ahead of this node's {format_lsn(engine.write_lsn)}",
            )
        found = segments.list_segments(self._datadir.wal)
        if not found or segments.segment_holding(found, from_lsn) is None:
            raise Refused(Refusal.WAL_REMOVED, f"WAL at {format_lsn(from_lsn)} was recycled; take a base backup")

    async def stream(self, slot_name: str, from_lsn: int, address: str) -> AsyncGenerator[bytes, None]:
        """Messages from `from_lsn` until the client leaves or the node stops."""
        slot = self.slots.acquire(slot_name, from_lsn)
        slot.streams += 1
        slot.last_contact, slot.address = time.time(), address
        log.info("replica streaming", extra={"slot": slot_name, "from_lsn": format_lsn(from_lsn), "address": address})
        try:
            async for chunk in self._messages(slot, from_lsn):
                yield chunk
        finally:
            slot.streams -= 1
            log.info("replica stream ended", extra={"slot": slot_name})

    async def _messages(self, slot: Slot, position: int) -> AsyncGenerator[bytes, None]:
        engine = self._engine
        loop = asyncio.get_running_loop()
        keepalive_s = self._settings.replication_keepalive_s
        last_keepalive = 0.0
        cursor = WalCursor(engine.progress, position, lambda: engine.write_lsn, self._stopping)
        while not self._stopping.is_set():
            if slot.lost:
                yield protocol.encode_end(Refusal.SLOT_LOST, "this replica's slot was lost; take a base backup")
                return
            refusal = self.not_to_follow()
            if refusal is not None:
                yield protocol.encode_end(Refusal.NOT_PRIMARY, refusal)
                return
            limit = cursor.bound()
            if cursor.position < limit:
                assert engine.writer is not None
                read = engine.writer.recent.read(cursor.position, limit, protocol.BATCH_BYTES)
                source = "memory"
                if read is None or read.end_lsn == cursor.position:  # fallen behind the live tail
                    source = "disk"
                    try:
                        read = await loop.run_in_executor(
                            None, segments.read_frames, self._datadir.wal, cursor.position, limit, protocol.BATCH_BYTES
                        )
                    except FileNotFoundError as error:
                        yield protocol.encode_end(Refusal.WAL_REMOVED, str(error))
                        return
                chunk, cursor.position = _messages_for(read), read.end_lsn
                metrics.REPLICATION_SENT_BYTES.labels(source).inc(len(chunk))
                yield chunk
                continue
            now = time.monotonic()
            if now - last_keepalive >= KEEPALIVE_MIN_INTERVAL_S:
                yield protocol.encode_keepalive(limit, int(time.time() * 1000), self._role.timeline)
                last_keepalive = now
            if not await cursor.wait_for_more(keepalive_s):
                last_keepalive = 0.0  # idle for a keepalive interval (or stopping): a keepalive next

    async def base_backup(self, slot_name: str) -> BaseBackup:
        """A consistent snapshot (a fresh checkpoint) and the LSNs to stream from after it."""
        await self._checkpointer.checkpoint("base backup")
        control = self._checkpointer.control
        assert control.snapshot is not None
        segment = segments.segment_holding(segments.list_segments(self._datadir.wal), control.redo_lsn)
        assert segment is not None, "the checkpoint keeps the segment holding its redo LSN"
        # No await since the checkpoint: no other checkpoint can have recycled that segment.
        self.slots.slots.pop(slot_name, None)
        self.slots.acquire(slot_name, segment.start_lsn)
        # Opened now: readable even if a later checkpoint unlinks it; _file_chunks closes it.
        file = open(self._datadir.base / control.snapshot, "rb")  # noqa: SIM115
        size = os.fstat(file.fileno()).st_size
        headers = [
            ("content-type", "application/octet-stream"),
            ("x-kv-system-identifier", str(control.system_identifier)),
            ("x-kv-timeline", str(self._role.timeline)),
            ("x-kv-redo-lsn", str(control.redo_lsn)),
            ("x-kv-start-lsn", str(segment.start_lsn)),
            ("x-kv-consistent-lsn", str(control.consistent_lsn)),
            ("x-kv-snapshot", control.snapshot),
            ("x-kv-snapshot-bytes", str(size)),
        ]
        log.info(
            "base backup",
            extra={
                "slot": slot_name,
                "snapshot": control.snapshot,
                "bytes": size,
                "redo_lsn": format_lsn(control.redo_lsn),
            },
        )
        return BaseBackup(headers, _file_chunks(file))


async def _file_chunks(file: Any) -> AsyncGenerator[bytes, None]:
    loop = asyncio.get_running_loop()
    try:
        while chunk := await loop.run_in_executor(None, file.read, BASE_BACKUP_CHUNK_BYTES):
            yield chunk
    finally:
        file.close()
