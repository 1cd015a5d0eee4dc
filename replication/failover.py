"""Promotion, fencing and rejoin: changing who the primary is without losing or mixing data.

- promote: a replica stops streaming, opens a new timeline in a new WAL segment at the
  end of what it received, logs TIMELINE_SWITCH, records `timelines/<tl>.history`, and
  takes writes.
- fencing: a primary that learns of a newer timeline (a replica or a peer on it) refuses
  writes from then on, across restarts, until an operator rejoins it. While a peer answers
  but cannot be checked, writes are held (see PeerWatch).
- rejoin: a former primary (or a replica) becomes a replica of the new primary. WAL it
  holds beyond the point where the new primary's timeline branched off is moved into
  `diverged/` (kept for inspection, never dropped) and the WAL is cut there (PostgreSQL's
  pg_rewind) when its snapshot is consistent before that point; otherwise its data
  directory is moved into `diverged/` and a new base backup is taken.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from kvstore.node import records
from kvstore.node.checkpoint import Checkpointer
from kvstore.node.config import Settings
from kvstore.node.control import ROLE_PRIMARY, ROLE_REPLICA, STATE_NEEDS_BASE_BACKUP, write_control
from kvstore.node.datadir import DataDir
from kvstore.node.engine import Engine
from kvstore.node.errors import BadRequest, Conflict, Unavailable
from kvstore.node.fsutil import fsync_dir, private_dirs
from kvstore.node.wal import segments
from kvstore.node.wal.format import format_lsn
from kvstore.node.wal.reader import WalScan

from . import peers, timelines
from .protocol import ReplicationError
from .replica import Receiver

log = logging.getLogger(__name__)

PEER_CHECK_INTERVAL_S = 5.0
PEER_CHECK_TIMEOUT_S = 3.0  # each request to a peer; a slower peer counts as not answering
REJOIN_REQUEST_TIMEOUT_S = 10.0


class FailoverNode(Protocol):
    settings: Settings
    datadir: DataDir
    engine: Engine
    checkpointer: Checkpointer
    stopping: asyncio.Event
    is_replica: bool
    history: list[timelines.Switch]
    receiver: Receiver | None
    fenced_reason: str | None

    @property
    def timeline(self) -> int: ...

    def fence(self, reason: str) -> None: ...

    def cancel_task(self, name: str) -> None: ...

    def start_as_primary(self) -> None: ...

    def request_restart(self, reason: str, before_exec: Callable[[], None] | None = None) -> None: ...


def _has_credentials(settings: Settings) -> bool:
    return bool(settings.replication_user and settings.replication_password)


# -- fencing ----------------------------------------------------------------------------


class PeerWatch:
    """A primary asks its peers whether a newer timeline of its system exists: once before it
    first takes writes (Node.run) and every PEER_CHECK_INTERVAL_S after. A peer on a newer
    timeline fences this node. A peer that answers but cannot be checked (it refuses the
    replication login, or is not a kvstored node) holds writes, 503 with the reason in
    /v1/status, until a later check of it succeeds: it may be a promoted node.

    A peer that does not answer at all (refused, reset, timed out, 5xx while it starts or
    stops) proves nothing and holds nothing. A node that is down takes no writes, and the
    check after it comes back sees its timeline; holding writes whenever any peer is down
    would turn every outage of one node into a write outage of the whole cluster, the very
    thing replicas are for. What asking cannot rule out is a promoted peer behind a network
    partition: promote a replica only once its old primary is down (or cut off from clients).
    """

    def __init__(self, node: FailoverNode) -> None:
        self._node = node
        self._logins = peers.PeerLogins(node.settings)
        self.holding: str | None = None  # why writes are held, while they are

    async def run(self) -> None:
        node = self._node
        while node.settings.peer_urls and not node.is_replica and not node.fenced_reason:
            await self.check()
            await asyncio.sleep(PEER_CHECK_INTERVAL_S)

    async def check(self) -> None:
        """Ask every peer once: fence on a newer timeline, hold or release writes."""
        node = self._node
        ours = node.checkpointer.control.system_identifier
        unchecked: list[str] = []
        async with httpx.AsyncClient(timeout=httpx.Timeout(PEER_CHECK_TIMEOUT_S)) as client:
            for url in node.settings.peer_urls:
                try:
                    identity = await peers.identify(client, url, self._logins)
                except peers.PeerUnreachable:
                    continue  # proves nothing (see above)
                except ReplicationError as error:
                    unchecked.append(f"peer {url} answers but cannot be checked for a newer timeline: {error}")
                    continue
                if identity.system_identifier == ours and identity.timeline > node.timeline:
                    node.fence(f"peer {url} is on timeline {identity.timeline}")
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
        engine = self._node.engine
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


async def promote(node: FailoverNode) -> dict[str, Any]:
    """Open a new timeline at the end of what this replica holds, and take writes. The API
    serves this only once the node is ready: its store is consistent (applied >= the base
    backup's consistent LSN), whatever state a crash left its WAL in."""
    if not node.is_replica:
        raise Conflict("this node is already a primary")
    started = time.perf_counter()
    receiver = node.receiver
    engine = node.engine
    writer, store = engine.writer, engine.store
    assert writer is not None and receiver is not None
    if writer.has_segment and writer.end_lsn < store.applied_lsn:
        raise Conflict(
            f"this replica's WAL ends at {format_lsn(writer.end_lsn)}, before its base backup's redo LSN "
            f"{format_lsn(store.applied_lsn)} (it was catching up when its primary went): restart it (the start "
            "removes that WAL, which its snapshot holds) and promote it then"
        )
    node.cancel_task("wal-receiver")
    await writer.sync()  # everything received is durable
    if writer.end_lsn > store.applied_lsn:
        # The receiver applies after each fsync; one cancelled in between leaves records unapplied.
        applied = await asyncio.get_running_loop().run_in_executor(
            None, _records_after, node.datadir.wal, store.applied_lsn, writer.end_lsn
        )
        engine.apply_replicated(applied)
    if not writer.has_segment:
        # No WAL of its own yet (killed before its first stream, say): its snapshot holds
        # everything to the applied LSN, so the new timeline's WAL begins there.
        writer.start_at(store.applied_lsn)
    switch_lsn = writer.end_lsn
    parent = node.timeline
    existing = [int(p.name.split(".")[0]) for p in node.datadir.timelines.glob("*.history")]
    timeline = max([parent, *existing]) + 1  # never reuse a timeline number this node has seen
    now_ms = int(time.time() * 1000)
    history = [*node.history, timelines.Switch(parent, switch_lsn, now_ms)]
    timelines.write_history(node.datadir.timelines, timeline, history)
    writer.switch_timeline(timeline)
    engine.accept_writes()
    lsn = engine.log_control_record(records.timeline_switch_record(timeline, parent, switch_lsn, now_ms))
    node.history = history
    await node.checkpointer.update_control(role=ROLE_PRIMARY, timeline=timeline, primary_url=None, fenced_reason=None)
    await engine.wait_for_commit(lsn)
    node.start_as_primary()
    unreceived = max(0, receiver.status.primary_flush_lsn - switch_lsn)
    seconds = time.perf_counter() - started
    log.warning(
        "promoted to primary",
        extra={
            "timeline": timeline,
            "switch_lsn": format_lsn(switch_lsn),
            "unreceived_bytes": unreceived,
            "seconds": round(seconds, 3),
        },
    )
    return {
        "timeline": timeline,
        "parent_timeline": parent,
        "switch_lsn": format_lsn(switch_lsn),
        "old_primary": receiver.status.primary_url,
        "old_primary_flush_lsn": format_lsn(receiver.status.primary_flush_lsn),
        "unreceived_bytes": unreceived,
        "seconds": round(seconds, 3),
    }


# -- rejoin ------------------------------------------------------------------------------


def _diverged_dir(datadir: DataDir, timeline: int, lsn: int) -> Path:
    return datadir.root / "diverged" / f"{timeline:08d}-{lsn:016X}-{int(time.time())}"


def keep_data(datadir: DataDir, keep_dir: Path) -> None:
    """Keep the WAL, the snapshots and control in `keep_dir` as they are, before a new base
    backup replaces them: hard links, so nothing is copied and nothing in the data directory
    changes yet (a copy where links cannot cross file systems)."""
    for folder in (datadir.wal, datadir.base):
        target = keep_dir / folder.name
        private_dirs(target)
        for path in folder.iterdir():
            if path.is_file():
                _link_or_copy(path, target / path.name)
        fsync_dir(target)
    _link_or_copy(datadir.control, keep_dir / "control")  # control is replaced by rename: the link keeps this one
    fsync_dir(keep_dir)
    fsync_dir(keep_dir.parent)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        shutil.copy2(source, target)
        with open(target, "rb") as copy:
            os.fsync(copy.fileno())


class NotAClusterNode(BadRequest):
    code = "not_a_cluster_node"


def rejoin_target(text: str) -> str:
    """`scheme://host[:port]` of a rejoin target; anything more (a path, a query, `user:pw@`,
    which httpx would send as Basic auth) is refused: the node sends its replication
    credentials there, to `/v1/auth/login` of a node and nowhere else."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port  # ValueError when it is not a port number
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        raise BadRequest('primary must be a node\'s base URL, http(s)://HOST:PORT, without a path, query or "user@"')
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + ("" if port is None else f":{port}")


async def confirm_cluster_node(client: httpx.AsyncClient, url: str, system_identifier: int) -> None:
    """Before any credential goes to `url`: its unauthenticated system identifier must be this
    node's. Errors name the status code only, never what the target answered (a rejoin must
    not become a way to read an internal URL's answers)."""
    refused = f"{url} is not a node of this cluster"
    try:
        response = await client.get(f"{url}{peers.SYSTEM_PATH}")
    except httpx.HTTPError as error:
        raise BadRequest(f"cannot reach the new primary at {url}: {type(error).__name__}") from None
    if response.status_code != 200:
        raise NotAClusterNode(f"{refused}: it answered {peers.SYSTEM_PATH} with status {response.status_code}")
    try:
        theirs = response.json()["system_identifier"]
    except (ValueError, KeyError, TypeError):
        theirs = None
    if theirs != str(system_identifier):
        raise NotAClusterNode(f"{refused}: its answer to {peers.SYSTEM_PATH} does not carry this system's identifier")


async def rejoin(node: FailoverNode, primary_url: str) -> dict[str, Any]:
    """Plan how this node follows `primary_url`, answer with the plan, then carry it out and restart."""
    settings = node.settings
    if not _has_credentials(settings):
        raise BadRequest("rejoin needs KVSTORE_REPLICATION_USER and KVSTORE_REPLICATION_PASSWORD on this node")
    url = rejoin_target(primary_url)
    control = node.checkpointer.control
    async with httpx.AsyncClient(timeout=httpx.Timeout(REJOIN_REQUEST_TIMEOUT_S), follow_redirects=False) as client:
        await confirm_cluster_node(client, url, control.system_identifier)
        try:
            identity = await peers.identify(client, url, peers.PeerLogins(settings))
        except ReplicationError as error:
            # The detail (which may quote the answer) goes to this node's log, not to the caller.
            log.warning(
                "rejoin: the new primary's login or identify failed", extra={"primary": url, "error": str(error)}
            )
            raise BadRequest(
                f"cannot follow {url}: its replication login or IDENTIFY failed (the reason is in this node's log)"
            ) from None
    if identity.system_identifier != control.system_identifier:
        raise BadRequest(f"{url} belongs to another system ({identity.system_identifier})")
    if not identity.takes_writes:
        raise BadRequest(f"{url} is not an unfenced primary ({identity.role}, {identity.fenced})")
    theirs, ours = identity.timeline, node.timeline
    writer = node.engine.writer
    assert writer is not None
    end_lsn = writer.end_lsn
    if theirs == ours and node.is_replica:
        action, switch_lsn = "follow", end_lsn
    elif theirs <= ours:
        raise BadRequest(f"{url} is on timeline {theirs}, not newer than this node's {ours}")
    else:
        ended = timelines.end_of(list(identity.history), ours)
        if ended is None:
            raise BadRequest(f"{url}'s timeline {theirs} does not descend from this node's timeline {ours}")
        switch_lsn = ended
        if end_lsn <= ended:
            action = "follow"
        elif control.snapshot is None or control.redo_lsn <= control.consistent_lsn <= ended:
            action = "rewind"  # the snapshot is consistent before the branch: replay can stop there
        else:
            action = "rebootstrap"
    keep_dir = _diverged_dir(node.datadir, ours, switch_lsn)
    plan = {
        "action": action,
        "primary": url,
        "timeline": ours,
        "primary_timeline": theirs,
        "switch_lsn": format_lsn(switch_lsn),
        "end_lsn": format_lsn(end_lsn),
        "divergent_bytes": max(0, end_lsn - switch_lsn),
        "kept_in": str(keep_dir) if action != "follow" else None,
    }
    datadir = node.datadir

    def carry_out() -> None:  # after the node has stopped writing, before it starts again
        new_control = control.replace(role=ROLE_REPLICA, primary_url=url, fenced_reason=None)
        if action == "rewind":
            moved = segments.rewind(datadir.wal, switch_lsn, keep_dir)
            log.warning("divergent WAL moved aside", extra={"bytes": moved, "kept_in": str(keep_dir)})
        elif action == "rebootstrap":
            keep_data(datadir, keep_dir)
            new_control = new_control.replace(
                state=STATE_NEEDS_BASE_BACKUP, snapshot=None, redo_lsn=0, consistent_lsn=0, replica_start_lsn=None
            )
            log.warning("data directory kept aside for a new base backup", extra={"kept_in": str(keep_dir)})
        # For a rebootstrap, the point of no return: from here every start, even after a
        # crash, clears WAL/ and base/ (kept in keep_dir) and takes the base backup.
        write_control(datadir.control, new_control)

    log.warning("rejoining as a replica", extra=plan)
    node.request_restart(f"rejoin {url}: {action}", before_exec=carry_out)
    return plan
