"""Rejoin: a former primary (or a replica) becomes a replica of the new primary.

WAL it holds beyond the point where the new primary's timeline branched off is moved into
`diverged/` (kept for inspection, never dropped) and the WAL is cut there (PostgreSQL's
pg_rewind) when its snapshot is consistent before that point; otherwise its data
directory is moved into `diverged/` and a new base backup is taken. The plan is made
here; the node's roles (roles.py) answer with it, then restart to carry it out.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from kvstore.node.checkpoint import Checkpointer
from kvstore.node.config import Settings
from kvstore.node.control import ROLE_REPLICA, STATE_NEEDS_BASE_BACKUP, write_control
from kvstore.node.datadir import DataDir
from kvstore.node.engine import Engine
from kvstore.node.errors import BadRequest
from kvstore.node.fsutil import fsync_dir, private_dirs
from kvstore.node.wal import segments
from kvstore.node.wal.format import format_lsn

from . import peers, timelines
from .protocol import ReplicationError

log = logging.getLogger(__name__)

REJOIN_REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class RejoinPlan:
    document: dict[str, Any]  # what the caller is answered: action, LSNs, where divergent data is kept
    restart_reason: str
    carry_out: Callable[[], None]  # after the node has stopped writing, before it starts again


def _has_credentials(settings: Settings) -> bool:
    return bool(settings.replication_user and settings.replication_password)


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


async def plan_rejoin(
    settings: Settings,
    datadir: DataDir,
    engine: Engine,
    checkpointer: Checkpointer,
    is_replica: bool,
    primary_url: str,
) -> RejoinPlan:
    """How this node follows `primary_url`: checked with the new primary, carried out at a restart."""
    if not _has_credentials(settings):
        raise BadRequest("rejoin needs KVSTORE_REPLICATION_USER and KVSTORE_REPLICATION_PASSWORD on this node")
    url = rejoin_target(primary_url)
    control = checkpointer.control
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
    theirs, ours = identity.timeline, checkpointer.control.timeline
    writer = engine.writer
    assert writer is not None
    end_lsn = writer.end_lsn
    if theirs == ours and is_replica:
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
    keep_dir = _diverged_dir(datadir, ours, switch_lsn)
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

    return RejoinPlan(plan, f"rejoin {url}: {action}", carry_out)
