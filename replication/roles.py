"""One owner of a node's role: primary or replica, and every change from one to the other.

The role's state (replica or primary, the timeline and its history, a fence, the receiver or
the primary's machinery, the peer watch) and its transitions (start as a replica or as a
primary, fence, adopt a new timeline, promote, rejoin, re-bootstrap) live here. The
receiver, the primary's machinery and the peer watch are each handed the storage they use
and this object as the small protocol of what they read and ask of the role
(replica.ReplicaRole, primary.PrimaryRole, failover.WatchedRole): none reaches the node.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from kvstore.node import metrics
from kvstore.node.archive.access import Stores, open_archive
from kvstore.node.archive.archiver import Archiver
from kvstore.node.archive.store import ArchiveError
from kvstore.node.checkpoint import Checkpointer
from kvstore.node.config import ConfigError, Settings
from kvstore.node.control import ROLE_PRIMARY, STATE_NEEDS_BASE_BACKUP, write_control
from kvstore.node.datadir import DataDir
from kvstore.node.engine import Engine
from kvstore.node.errors import Conflict
from kvstore.node.expiry import run_expirer
from kvstore.node.wal.format import format_lsn

from . import failover, timelines
from .primary import Primary
from .rejoin import plan_rejoin
from .replica import Receiver

log = logging.getLogger(__name__)

# Stop, then start again as the same process; the callable changes the data directory in
# between (node/server.Node.request_restart).
RequestRestart = Callable[[str, Callable[[], None] | None], None]


class Tasks(Protocol):
    """The node's background tasks (node/supervisor.Supervisor)."""

    def spawn(self, name: str, run: Callable[[], Awaitable[object]]) -> None: ...

    def cancel(self, name: str) -> None: ...


class Roles:
    def __init__(
        self,
        settings: Settings,
        datadir: DataDir,
        engine: Engine,
        checkpointer: Checkpointer,
        tasks: Tasks,
        stopping: asyncio.Event,
        request_restart: RequestRestart,
        *,
        is_replica: bool,
        history: list[timelines.Switch],
    ) -> None:
        self._settings = settings
        self._datadir = datadir
        self._engine = engine
        self._checkpointer = checkpointer
        self._tasks = tasks
        self._stopping = stopping
        self._request_restart = request_restart
        self.is_replica = is_replica  # what control recorded, until a promotion
        self.history = history  # how this node's timeline descends from timeline 1
        self.primary: Primary | None = None  # the replication machinery of the role this node has
        self.receiver: Receiver | None = None
        self.fenced_reason: str | None = None  # a newer timeline exists: writes refused (kept in control)
        self.archiver: Archiver | None = None  # a primary's, with archive_url set
        self._archive = _open_archive(settings)  # opened now: a bad URL or key stops the start
        self.peer_watch = failover.PeerWatch(settings, engine, checkpointer.control.system_identifier, self)
        metrics.bind_gauge(metrics.NODE_FENCED, lambda: 1 if self.fenced_reason else 0)

    @property
    def timeline(self) -> int:
        return self._checkpointer.control.timeline

    # -- start -----------------------------------------------------------------------------

    async def start_as_replica(self, replica_of_flag: str | None) -> None:
        """Refuse writes and stream from the primary: the one named by --replica-of
        (`replica_of_flag`), else by control, else by the environment or config.toml."""
        recorded = self._checkpointer.control.primary_url
        # The command line wins over control; control (where the receiver records a new
        # primary after a failover) wins over the environment and config.toml.
        primary_url = replica_of_flag or recorded or self._settings.replica_of
        if not primary_url:
            raise ConfigError("this data directory is a replica's, but no primary is known: set --replica-of")
        if replica_of_flag and primary_url != recorded:
            log.warning(
                "following the primary named by --replica-of, not the one in control",
                extra={"replica_of": primary_url, "control": recorded},
            )
            await self._checkpointer.update_control(primary_url=primary_url)
        self._engine.refuse_writes(f"this node is a replica of {primary_url}; send writes to the primary")
        self.receiver = Receiver(self._settings, self._engine, self._checkpointer, self._stopping, self, primary_url)
        metrics.REPLICATION_LAG.bind(self.receiver.lag_rows)
        self._tasks.spawn("wal-receiver", self.receiver.run)

    async def start_as_primary(self) -> None:
        """Expiry, then a check of the peers, then the primary's machinery: a restarted former
        primary must learn of a promotion before it takes any write."""
        self._start_expirer()
        await self.peer_watch.check()
        self._become_primary()

    def _start_expirer(self) -> None:
        """A primary's keys expire here; a replica's by the primary's DEL records."""
        settings, engine = self._settings, self._engine
        self._tasks.spawn(
            "expirer", lambda: run_expirer(engine, settings.expire_interval_ms / 1000, settings.expire_batch_keys)
        )

    def _become_primary(self) -> None:
        self.is_replica = False
        primary = Primary(self._settings, self._datadir, self._engine, self._checkpointer, self._stopping, self)
        self.primary = primary
        primary.install()
        engine = self._engine
        metrics.REPLICATION_LAG.bind(
            lambda: [
                (row["name"], row["lag_bytes"], row["lag_s"])
                for row in primary.slots.describe(engine.write_lsn, time.time())
                if row["lag_bytes"] is not None
            ]
        )
        for state in ("streaming", "disconnected", "lost"):
            metrics.bind_gauge(
                metrics.REPLICATION_SLOTS.labels(state),
                functools.partial(primary.slots.count_in_state, state),
            )
        self._tasks.spawn("lag-sampler", primary.run_lag_sampler)
        # Fenced in an earlier life (control), or just now by the peer check before this.
        self.fenced_reason = self.fenced_reason or self._checkpointer.control.fenced_reason
        if self.fenced_reason:
            engine.refuse_writes(self.fenced_reason)
            log.critical("this node is fenced", extra={"reason": self.fenced_reason})
        self._tasks.spawn("peer-check", self.peer_watch.run)
        if self._archive is not None and not self.fenced_reason:
            self._start_archiver(self._archive)

    def _start_archiver(self, stores: Stores) -> None:
        """A primary that is not fenced archives its WAL (and a promoted one, on its new timeline)."""
        archiver = Archiver(self._settings, self._datadir, self._engine, self._checkpointer, stores)
        self.archiver = archiver
        self._checkpointer.wal_holds["archiver"] = archiver.hold
        self._engine.time_marks = True
        self._tasks.spawn("archiver", archiver.run)

    def _stop_archiver(self) -> None:
        """Fenced: this timeline is superseded, its WAL must not reach the archive any more."""
        if self.archiver is not None:
            self._tasks.cancel("archiver")
            self._checkpointer.wal_holds.pop("archiver", None)
            self._engine.time_marks = False

    def stop(self) -> None:
        """The node is stopping: no replica confirmation will come for the writes waiting on one."""
        if self.primary is not None:
            self.primary.fail_sync_waiters("the node is shutting down")

    # -- changes of role -------------------------------------------------------------------

    def fence(self, reason: str) -> None:
        """A newer timeline exists elsewhere: refuse writes from now on, and after restarts."""
        if self.fenced_reason:
            return
        text = f"fenced: {reason}; this node's timeline {self.timeline} was superseded (use kvctl rejoin)"
        self.fenced_reason = text
        self._engine.refuse_writes(text)
        self._stop_archiver()
        if self.primary is not None:
            self.primary.fail_sync_waiters(text)
        log.critical("fenced: refusing writes", extra={"reason": reason})
        checkpointer = self._checkpointer
        self._tasks.spawn("persist-fence", lambda: checkpointer.update_control(fenced_reason=text))

    def adopt_timeline(self, timeline: int, switch: timelines.Switch) -> None:
        """A replica applied its primary's TIMELINE_SWITCH: record the new timeline's history."""
        if timeline <= self.timeline:
            return
        self.history = [*self.history, switch]
        timelines.write_history(self._datadir.timelines, timeline, self.history)
        checkpointer = self._checkpointer
        checkpointer.control = checkpointer.control.replace(timeline=timeline)
        self._tasks.spawn("persist-timeline", lambda: checkpointer.update_control(timeline=timeline))
        log.info("following a new timeline", extra={"timeline": timeline, "switch_lsn": format_lsn(switch.switch_lsn)})

    async def promote(self) -> dict[str, Any]:
        """Open a new timeline at the end of what this replica holds, and take writes. The API
        serves this only once the node is ready: its store is consistent (applied >= the base
        backup's consistent LSN), whatever state a crash left its WAL in."""
        if not self.is_replica:
            raise Conflict("this node is already a primary")
        started = time.perf_counter()
        receiver = self.receiver
        assert receiver is not None
        failover.check_promotable(self._engine)
        self._tasks.cancel("wal-receiver")
        new = await failover.open_timeline(self._engine, self._datadir, self.timeline, self.history)
        self.history = new.history
        await self._checkpointer.update_control(
            role=ROLE_PRIMARY, timeline=new.timeline, primary_url=None, fenced_reason=None
        )
        await self._engine.wait_for_commit(new.lsn)
        self.receiver = None
        self._start_expirer()
        self._become_primary()
        return failover.promoted(new, receiver.status, time.perf_counter() - started)

    async def rejoin(self, primary_url: str) -> dict[str, Any]:
        """Plan how this node follows `primary_url`, answer with the plan, then carry it out at a restart."""
        plan = await plan_rejoin(
            self._settings, self._datadir, self._engine, self._checkpointer, self.is_replica, primary_url
        )
        log.warning("rejoining as a replica", extra=plan.document)
        self._request_restart(plan.restart_reason, plan.carry_out)
        return plan.document

    def rebootstrap(self, primary_url: str, reason: str) -> None:
        """The primary no longer has this replica's WAL: restart and take a new base backup from it."""
        datadir = self._datadir
        marked = self._checkpointer.control.replace(state=STATE_NEEDS_BASE_BACKUP, primary_url=primary_url)
        self._request_restart(
            f"re-bootstrap from {primary_url}: {reason}", lambda: write_control(datadir.control, marked)
        )


def _open_archive(settings: Settings) -> Stores | None:
    if settings.archive_url is None:
        return None
    try:
        return open_archive(settings.archive_url, settings.archive_key_file, settings.archive_key)
    except ArchiveError as error:
        raise ConfigError(f"archive_url / archive key: {error}") from None
