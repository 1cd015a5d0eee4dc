"""A replica's base backup: a new replica (or one whose primary recycled the WAL it needed)
takes its primary's newest snapshot, verified before it is used, with the LSNs to stream
from after it (PostgreSQL's pg_basebackup, over one HTTP request)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from kvstore.node.config import Settings
from kvstore.node.control import ROLE_REPLICA, STATE_SHUT_DOWN, Control, write_control
from kvstore.node.datadir import DataDir
from kvstore.node.fsutil import PRIVATE_DIR_MODE, fsync_dir
from kvstore.node.progress import Progress
from kvstore.node.snapshot import SnapshotReader
from kvstore.node.wal.format import format_lsn
from kvstore.node.wal.segments import list_segments, remove_all_segments

from . import peers, timelines
from .protocol import ReplicationError

log = logging.getLogger(__name__)

DOWNLOAD_CHUNK_BYTES = 1024 * 1024
SNAPSHOT_NAME = re.compile(r"snapshot_[0-9A-F]{16}\.chk")


@dataclass(frozen=True, slots=True)
class _BackupHeaders:
    """What a base backup response says about its snapshot, in its X-KV-* headers."""

    system_identifier: int
    timeline: int
    redo_lsn: int
    start_lsn: int
    consistent_lsn: int
    snapshot: str
    snapshot_bytes: int


def _backup_headers(url: str, headers: httpx.Headers) -> _BackupHeaders:
    try:
        parsed = _BackupHeaders(
            system_identifier=int(headers["x-kv-system-identifier"]),
            timeline=int(headers["x-kv-timeline"]),
            redo_lsn=int(headers["x-kv-redo-lsn"]),
            start_lsn=int(headers["x-kv-start-lsn"]),
            consistent_lsn=int(headers["x-kv-consistent-lsn"]),
            snapshot=headers["x-kv-snapshot"],
            snapshot_bytes=int(headers["x-kv-snapshot-bytes"]),
        )
    except KeyError as missing:
        raise ReplicationError(f"{url} answered the base backup request without the {missing} header") from None
    except ValueError as error:
        raise ReplicationError(f"{url} answered the base backup request with a bad header: {error}") from None
    if not SNAPSHOT_NAME.fullmatch(parsed.snapshot):  # it becomes a file name here
        raise ReplicationError(f"{url} named its snapshot {parsed.snapshot[:80]!r}, not like snapshot_<LSN>.chk")
    return parsed


async def take_base_backup(
    datadir: DataDir,
    settings: Settings,
    primary_url: str,
    system_identifier: int | None = None,
    progress: Progress | None = None,
) -> Control:
    """Fill a data directory from the primary: its snapshot, control, timeline history.

    The snapshot is downloaded to a temporary name, fsynced and checked frame by frame
    (CRCs and its trailer) before control names it. Control is written last, atomically:
    until then the data directory is what it was, empty (a new replica: the next start
    with --replica-of begins again) or marked `needs base backup` (see
    `clear_for_base_backup`). With `system_identifier` (a data directory that belonged to
    a system), only a node of that system is accepted. `progress` counts the snapshot's
    bytes downloaded.
    """
    url = primary_url.rstrip("/")
    timeout = httpx.Timeout(30.0, read=300.0)
    logins = peers.PeerLogins(settings)
    async with httpx.AsyncClient(timeout=timeout) as client:
        identity = await peers.identify(client, url, logins)
        if system_identifier is not None and identity.system_identifier != system_identifier:
            raise ReplicationError(
                f"{url} belongs to system {identity.system_identifier}, this data directory to {system_identifier}; "
                "start this node with --replica-of naming a node of its own system"
            )
        started = time.perf_counter()
        params = {"slot": settings.node_name}
        headers = await logins.headers(client, url)
        async with client.stream("GET", f"{url}/v1/replication/basebackup", params=params, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                raise ReplicationError(f"base backup from {url} refused: {peers.error_text(response)}")
            meta = _backup_headers(url, response.headers)
            partial = datadir.base / f".{meta.snapshot}.partial"
            received = await _download(response, partial, progress or Progress(), meta.snapshot_bytes)
    if received != meta.snapshot_bytes:
        raise ReplicationError(f"base backup cut short: {received} of {meta.snapshot_bytes} bytes")
    loop = asyncio.get_running_loop()
    info = await loop.run_in_executor(None, _verify_snapshot, partial)
    os.replace(partial, datadir.base / meta.snapshot)
    if identity.history:
        timelines.write_history(datadir.timelines, meta.timeline, list(identity.history))
    control = Control(
        system_identifier=meta.system_identifier,
        timeline=meta.timeline,
        redo_lsn=meta.redo_lsn,
        snapshot=meta.snapshot,
        checkpoint_at_ms=int(time.time() * 1000),
        state=STATE_SHUT_DOWN,
        role=ROLE_REPLICA,
        primary_url=url,
        replica_start_lsn=meta.start_lsn,
        consistent_lsn=meta.consistent_lsn,
    )
    write_control(datadir.control, control)
    log.info(
        "base backup taken",
        extra={
            "primary": url,
            "snapshot": meta.snapshot,
            "bytes": received,
            "keys": info,
            "redo_lsn": format_lsn(control.redo_lsn),
            "seconds": round(time.perf_counter() - started, 3),
        },
    )
    return control


async def _download(response: httpx.Response, path: Path, progress: Progress, total: int) -> int:
    loop = asyncio.get_running_loop()
    received = 0
    progress.total = total
    with open(path, "wb") as file:
        async for chunk in response.aiter_bytes(DOWNLOAD_CHUNK_BYTES):
            await loop.run_in_executor(None, file.write, chunk)
            received += len(chunk)
            progress.done = received
        await loop.run_in_executor(None, file.flush)
        await loop.run_in_executor(None, os.fsync, file.fileno())
    return received


def _verify_snapshot(path: Path) -> int:
    """Reads every frame (CRC each) and the trailer; returns the entry count."""
    reader = SnapshotReader(path)
    return sum(1 for _ in reader.entries())


def clear_for_base_backup(datadir: DataDir) -> None:
    """Empty WAL/ and base/ for a new base backup. Control already says `needs base backup`
    (with the primary's URL) and keeps saying it until the base backup replaces it, so a
    crash anywhere in between makes the next start clear and begin again, never initdb."""
    for folder in (datadir.base, datadir.wal):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(mode=PRIVATE_DIR_MODE)
    fsync_dir(datadir.root)


def drop_wal_before_snapshot(datadir: DataDir, control: Control) -> int:
    """A replica killed while catching up after its base backup can hold WAL that ends before
    its snapshot's redo LSN. Recovery cannot start from the redo LSN in it, and the snapshot
    already holds all of it: remove it, and the replica streams it again from the primary
    (`replica_start_lsn`) as it did after the base backup. Returns the segments removed."""
    segments = list_segments(datadir.wal)
    if control.role != ROLE_REPLICA or control.replica_start_lsn is None or not segments:
        return 0
    if segments[-1].end_lsn >= control.redo_lsn:
        return 0
    remove_all_segments(datadir.wal)
    log.warning(
        "this replica's WAL ends before its snapshot's redo LSN; removed it (the snapshot holds all of it) "
        "and will stream again from the primary",
        extra={
            "wal_end_lsn": format_lsn(segments[-1].end_lsn),
            "redo_lsn": format_lsn(control.redo_lsn),
            "segments": len(segments),
        },
    )
    return len(segments)
