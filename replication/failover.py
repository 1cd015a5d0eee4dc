"""Fencing and promotion: changing who the primary is without losing or mixing data.

- fencing: a primary that learns of a newer timeline (a replica or a peer on it) refuses
  writes from then on, across restarts, until an operator rejoins it (rejoin.py). While a
  peer answers but cannot be checked, writes are held (see PeerWatch).
- promotion: a replica stops streaming, opens a new timeline in a new WAL segment at the
  end of what it received, logs TIMELINE_SWITCH, records `timelines/<tl>.history`, and
  takes writes. The steps on the WAL are here; the change of role is roles.Roles.promote.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from kvstore.node import records
from kvstore.node.config import Settings
from kvstore.node.datadir import DataDir
from kvstore.node.engine import Engine
from kvstore.node.errors import Conflict, Unavailable
from kvstore.node.wal.format import format_lsn
from kvstore.node.wal.reader import WalScan

from . import peers, timelines
from .protocol import ReplicationError
from .replica import ReceiverStatus

log = logging.getLogger(__name__)

PEER_CHECK_INTERVAL_S = 5.0
PEER_CHECK_TIMEOUT_S = 3.0  # each request to a peer; a slower peer counts as not answering


class WatchedRole(Protocol):
    """What the peer watch reads of the node's role, and the fence it may raise."""

    @property
    def is_replica(self) -> bool: ...

    @property
    def fenced_reason(self) -> str | None: ...

    @property
    def timeline(self) -> int: ...

    def fence(self, reason: str) -> None: ...


# -- fencing ----------------------------------------------------------------------------


class PeerWatch:
    """A primary asks its peers whether a newer timeline of its system exists: once before it
    first takes writes (roles.Roles.start_as_primary) and every PEER_CHECK_INTERVAL_S after.
    A peer on a newer timeline fences this node. A peer that answers but cannot be checked
    (it refuses the replication login, or is not a kvstored node) holds writes, 503 with the
    reason in /v1/status, until a later check of it succeeds: it may be a promoted node.

    A peer that does not answer at all (refused, reset, timed out, 5xx while it starts or
    stops) proves nothing and holds nothing. A node that is down takes no writes, and the
    check after it comes back sees its timeline; holding writes whenever any peer is down
    would turn every outage of one node into a write outage of the whole cluster, the very
    thing replicas are for. What asking cannot rule out is a promoted peer behind a network
    partition: promote a replica only once its old primary is down (or cut off from clients).
    """

    def __init__(self, settings: Settings, engine: Engine, system_identifier: int, role: WatchedRole) -> None:
        self._settings = settings
        self._engine = engine
        self._system_identifier = system_identifier
        self._role = role
        self._logins = peers.PeerLogins(settings)
        self.holding: str | None = None  # why writes are held, while they are

    async def run(self) -> None:
        role = self._role
        while self._settings.peer_urls and not role.is_replica and not role.fenced_reason:
            await self.check()
            await asyncio.sleep(PEER_CHECK_INTERVAL_S)

    async def check(self) -> None:
        """Ask every peer once: fence on a newer timeline, hold or release writes."""
        unchecked: list[str] = []
        async with httpx.AsyncClient(timeout=httpx.Timeout(PEER_CHECK_TIMEOUT_S)) as client:
            for url in self._settings.peer_urls:
                try:
                    identity = await peers.identify(client, url, self._logins)
                except peers.PeerUnreachable:
                    continue  # proves nothing (see above)
                except ReplicationError as error:
                    unchecked.append(f"peer {url} answers but cannot be checked for a newer timeline: {error}")
                    continue
                if identity.system_identifier == self._system_identifier and identity.timeline > self._role.timeline:
                    self._role.fence(f"peer {url} is on timeline {identity.timeline}")
                    return
        reason = None
        if unchecked:
            reason = "; ".join(unchecked) + (
                "; writes are refused until every peer that answers can be checked (or is taken out of peers)"
            )
        self._hold(reason)

    def _hold(self, reason: str | None) -> None:
        """Refuse writes for `reason`, or accept them again (None). Never touches a refusal that
        is not the hold's own: a fence or a failed WAL says more, and stays."""
        engine = self._engine
        ours = self.holding is not None and engine.read_only_reason == self.holding
        if reason is not None and (ours or engine.read_only_reason is None):
            engine.refuse_writes(reason, Unavailable)
        elif reason is None and ours:
            engine.accept_writes()
        if reason is not None and reason != self.holding:
            log.error("a peer cannot be checked for a newer timeline; holding writes", extra={"reason": reason})
        elif reason is None and self.holding is not None:
            log.warning("every peer that answers was checked; writes are no longer held")
        self.holding = reason


# -- promotion --------------------------------------------------------------------------


def _records_after(wal_dir: Path, from_lsn: int, until_lsn: int) -> list[tuple[records.Record, int]]:
    return [
        (item.record, item.end_lsn) for item in WalScan(wal_dir, records.decode, from_lsn=from_lsn, until_lsn=until_lsn)
    ]


@dataclass(frozen=True, slots=True)
class NewTimeline:
    timeline: int
    switch: timelines.Switch  # where its parent ended
    history: list[timelines.Switch]  # how it descends from timeline 1
    lsn: int  # its TIMELINE_SWITCH record: the promotion holds once that commits


def check_promotable(engine: Engine) -> None:
    """Refuse a replica whose WAL ends before what its snapshot holds (Conflict)."""
    writer, store = engine.writer, engine.store
    assert writer is not None
    if writer.has_segment and writer.end_lsn < store.applied_lsn:
        raise Conflict(
            f"this replica's WAL ends at {format_lsn(writer.end_lsn)}, before its base backup's redo LSN "
            f"{format_lsn(store.applied_lsn)} (it was catching up when its primary went): restart it (the start "
            "removes that WAL, which its snapshot holds) and promote it then"
        )


async def open_timeline(engine: Engine, datadir: DataDir, parent: int, history: list[timelines.Switch]) -> NewTimeline:
    """With the receiver stopped: make what was received durable and applied, then start a new
    timeline after `parent` at the WAL's end, and log its TIMELINE_SWITCH. Writes are accepted
    from here; they commit once the node's control names the new timeline."""
    writer, store = engine.writer, engine.store
    assert writer is not None
    await writer.sync()  # everything received is durable
    if writer.end_lsn > store.applied_lsn:
        # The receiver applies after each fsync; one cancelled in between leaves records unapplied.
        applied = await asyncio.get_running_loop().run_in_executor(
            None, _records_after, datadir.wal, store.applied_lsn, writer.end_lsn
        )
        engine.apply_replicated(applied)
    if not writer.has_segment:
        # No WAL of its own yet (killed before its first stream, say): its snapshot holds
        # everything to the applied LSN, so the new timeline's WAL begins there.
        writer.start_at(store.applied_lsn)
    switch_lsn = writer.end_lsn
    existing = [int(p.name.split(".")[0]) for p in datadir.timelines.glob("*.history")]
    timeline = max([parent, *existing]) + 1  # never reuse a timeline number this node has seen
    switch = timelines.Switch(parent, switch_lsn, int(time.time() * 1000))
    history = [*history, switch]
    timelines.write_history(datadir.timelines, timeline, history)
    writer.switch_timeline(timeline)
    engine.accept_writes()
    lsn = engine.log_control_record(records.timeline_switch_record(timeline, parent, switch_lsn, switch.time_ms))
    return NewTimeline(timeline, switch, history, lsn)


def promoted(new: NewTimeline, receiver: ReceiverStatus, seconds: float) -> dict[str, Any]:
    """Log the promotion and describe it: what the old primary had that this node never received."""
    switch_lsn = new.switch.switch_lsn
    unreceived = max(0, receiver.primary_write_lsn - switch_lsn)
    log.warning(
        "promoted to primary",
        extra={
            "timeline": new.timeline,
            "switch_lsn": format_lsn(switch_lsn),
            "unreceived_bytes": unreceived,
            "seconds": round(seconds, 3),
        },
    )
    return {
        "timeline": new.timeline,
        "parent_timeline": new.switch.parent,
        "switch_lsn": format_lsn(switch_lsn),
        "old_primary": receiver.primary_url,
        "old_primary_write_lsn": format_lsn(receiver.primary_write_lsn),
        "unreceived_bytes": unreceived,
        "seconds": round(seconds, 3),
    }
