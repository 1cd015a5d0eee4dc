"""Promotion, fencing and rejoin: changing who the primary is without losing or mixing data.

- promote: a replica stops streaming, opens a new timeline in a new WAL segment at the
  end of what it received, logs TIMELINE_SWITCH, records `timelines/<tl>.history`, and
  takes writes.
- fencing: a primary that learns of a newer timeline (a replica or a peer on it) refuses
  writes from then on, across restarts, until an operator rejoins it.
- rejoin: a former primary (or a replica) becomes a replica of the new primary. WAL it
  holds beyond the point where the new primary's timeline branched off is moved into
  `diverged/` (kept for inspection, never dropped) and the WAL is cut there (PostgreSQL's
  pg_rewind) when its snapshot is consistent before that point; otherwise its data
  directory is moved into `diverged/` and a new base backup is taken.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import httpx

from kvstore.node import records
from kvstore.node.checkpoint import Checkpointer
from kvstore.node.config import Settings
from kvstore.node.control import ROLE_PRIMARY, ROLE_REPLICA, STATE_NEEDS_BASE_BACKUP, write_control
from kvstore.node.datadir import DataDir
from kvstore.node.engine import Engine
from kvstore.node.errors import BadRequest, Conflict
from kvstore.node.fsutil import fsync_dir
from kvstore.node.wal.format import format_lsn
from kvstore.node.wal.reader import WalScan, list_segments

from . import timelines
from .replica import Receiver, ReplicationError, _login

log = logging.getLogger(__name__)

PEER_CHECK_INTERVAL_S = 5.0


class FailoverNode(Protocol):
    settings: Settings
    datadir: DataDir
    engine: Engine
    checkpointer: Checkpointer
    stopping: asyncio.Event
    is_replica: bool
    history: list[timelines.Switch]
    receiver: Receiver | None

    @property
    def timeline(self) -> int: ...

    def fence(self, reason: str) -> None: ...

    def cancel_task(self, name: str) -> None: ...

    def start_as_primary(self) -> None: ...

    def request_restart(self, reason: str, before_exec: Callable[[], None] | None = None) -> None: ...


def _has_credentials(settings: Settings) -> bool:
    return bool(settings.replication_user and settings.replication_password)


async def identify(client: httpx.AsyncClient, url: str, settings: Settings) -> dict[str, Any]:
    headers = await _login(client, url, settings)
    response = await client.get(f"{url}/v1/replication/identify", headers=headers)
    if response.status_code != 200:
        raise ReplicationError(f"{url} did not identify itself: {response.status_code} {response.text[:200]}")
    document: dict[str, Any] = response.json()
    return document


# -- fencing ----------------------------------------------------------------------------


async def check_peers(node: FailoverNode, client: httpx.AsyncClient) -> bool:
    """Fence this primary if a peer of the same system is on a newer timeline; True if fenced."""
    ours = str(node.checkpointer.control.system_identifier)
    for url in node.settings.peer_urls:
        try:
            identity = await identify(client, url, node.settings)
        except (httpx.HTTPError, ReplicationError, ValueError):
            continue  # an unreachable peer proves nothing
        if str(identity.get("system_identifier")) == ours and int(identity["timeline"]) > node.timeline:
            node.fence(f"peer {url} is on timeline {identity['timeline']}")
            return True
    return False


def peers_checkable(settings: Settings) -> bool:
    if settings.peer_urls and not _has_credentials(settings):
        log.warning("peers are configured but no replication credentials: cannot check them for newer timelines")
    return bool(settings.peer_urls) and _has_credentials(settings)


async def watch_peers(node: FailoverNode) -> None:
    """A primary asks its peers every few seconds whether a newer timeline exists (and once
    before it first accepts writes: see Node)."""
    if not peers_checkable(node.settings):
        return
    async with httpx.AsyncClient(timeout=httpx.Timeout(3.0)) as client:
        while not node.is_replica and not await check_peers(node, client):
            await asyncio.sleep(PEER_CHECK_INTERVAL_S)


# -- promotion --------------------------------------------------------------------------


def _records_after(wal_dir: Path, from_lsn: int, until_lsn: int) -> list[tuple[records.Record, int]]:
    return [(item.record, item.end_lsn) for item in WalScan(wal_dir, from_lsn=from_lsn, until_lsn=until_lsn)]


async def promote(node: FailoverNode) -> dict[str, Any]:
    if not node.is_replica:
        raise Conflict("this node is already a primary")
    started = time.perf_counter()
    receiver = node.receiver
    node.cancel_task("wal-receiver")
    engine = node.engine
    writer = engine.writer
    assert writer is not None and receiver is not None
    await writer.sync()  # everything received is durable
    # The receiver applies after each fsync; one cancelled in between leaves records unapplied.
    applied = await asyncio.get_running_loop().run_in_executor(
        None, _records_after, node.datadir.wal, engine.store.applied_lsn, writer.end_lsn
    )
    engine.apply_replicated(applied)
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


def rewind_wal(wal_dir: Path, switch_lsn: int, keep_dir: Path) -> int:
    """Move the WAL beyond `switch_lsn` into `keep_dir` and cut it there; returns the bytes moved."""
    keep_dir.mkdir(parents=True, exist_ok=True)
    moved = 0
    for segment in list_segments(wal_dir):
        if segment.start_lsn >= switch_lsn:
            shutil.move(segment.path, keep_dir / segment.path.name)
            moved += segment.size_bytes
        elif segment.end_lsn > switch_lsn:
            cut_at = switch_lsn - segment.start_lsn
            with open(segment.path, "rb") as source, open(keep_dir / f"{segment.path.name}.tail", "wb") as tail:
                source.seek(cut_at)
                tail.write(source.read())
                tail.flush()
                os.fsync(tail.fileno())
            with open(segment.path, "r+b") as target:
                target.truncate(cut_at)
                os.fsync(target.fileno())
            moved += segment.size_bytes - cut_at
    fsync_dir(keep_dir)
    fsync_dir(wal_dir)
    return moved


async def rejoin(node: FailoverNode, primary_url: str) -> dict[str, Any]:
    """Plan how this node follows `primary_url`, answer with the plan, then carry it out and restart."""
    settings = node.settings
    if not _has_credentials(settings):
        raise BadRequest("rejoin needs KVSTORE_REPLICATION_USER and KVSTORE_REPLICATION_PASSWORD on this node")
    url = primary_url.rstrip("/")
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0)) as client:
            identity = await identify(client, url, settings)
    except (httpx.HTTPError, ReplicationError, ValueError) as error:
        # Some httpx errors have no text (a timeout): the class is then all there is to say.
        raise BadRequest(f"cannot reach the new primary at {url}: {error or type(error).__name__}") from None
    control = node.checkpointer.control
    if str(identity.get("system_identifier")) != str(control.system_identifier):
        raise BadRequest(f"{url} belongs to another system ({identity.get('system_identifier')})")
    if identity.get("role") != "primary" or identity.get("fenced"):
        raise BadRequest(f"{url} is not an unfenced primary ({identity.get('role')}, {identity.get('fenced')})")
    theirs, ours = int(identity["timeline"]), node.timeline
    writer = node.engine.writer
    assert writer is not None
    end_lsn = writer.end_lsn
    if theirs == ours and node.is_replica:
        action, switch_lsn = "follow", end_lsn
    elif theirs <= ours:
        raise BadRequest(f"{url} is on timeline {theirs}, not newer than this node's {ours}")
    else:
        history = [timelines.Switch(item["parent"], item["switch_lsn"], 0) for item in identity.get("history", [])]
        ended = timelines.end_of(history, ours)
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
            moved = rewind_wal(datadir.wal, switch_lsn, keep_dir)
            log.warning("divergent WAL moved aside", extra={"bytes": moved, "kept_in": str(keep_dir)})
        elif action == "rebootstrap":
            keep_dir.mkdir(parents=True, exist_ok=True)
            for name in ("WAL", "base"):
                shutil.move(datadir.root / name, keep_dir / name)
                (datadir.root / name).mkdir(mode=0o700)
            shutil.copy2(datadir.control, keep_dir / "control")
            new_control = new_control.replace(state=STATE_NEEDS_BASE_BACKUP, snapshot=None, redo_lsn=0)
        write_control(datadir.control, new_control)

    log.warning("rejoining as a replica", extra=plan)
    node.request_restart(f"rejoin {url}: {action}", before_exec=carry_out)
    return plan
