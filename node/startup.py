"""The data directory as a node starts, before recovery: a new primary's is initialised
(initdb), or restored from an archive (`restore_from`); a new replica's, or one whose control
says it needs a base backup, is filled from its primary; any other has the WAL its snapshot
already holds dropped."""

from __future__ import annotations

import asyncio
import logging

import httpx

from kvstore.replication.basebackup import clear_for_base_backup, drop_wal_before_snapshot, take_base_backup
from kvstore.replication.protocol import ReplicationError

from .archive.access import open_archive
from .archive.restore import Target, restore
from .config import ConfigError, Settings
from .control import ROLE_PRIMARY, STATE_NEEDS_BASE_BACKUP, read_control
from .datadir import DataDir, create_layout, initdb
from .snapshot import SnapshotError
from .start_report import StartReport

log = logging.getLogger(__name__)

BASE_BACKUP_RETRY_FIRST_S = 0.5
BASE_BACKUP_RETRY_MAX_S = 10.0


async def prepare_datadir(
    settings: Settings, datadir: DataDir, replica_of_flag: str | None, stop: asyncio.Event, report: StartReport
) -> bool:
    """Ready the data directory for recovery; False if `stop` was set while waiting for a
    primary. `replica_of_flag` is --replica-of: it names the primary even when control names
    another (settings.replica_of from the environment or config.toml does not). `report`
    tells the service manager which step is running."""
    report.step("preparing the data directory")
    control = read_control(datadir.control) if datadir.exists() else None
    if control is not None and settings.restore_from:
        log.info(
            "the data directory exists: starting it as it is, not restoring it from the archive",
            extra={"data_dir": str(datadir.root), "restore_from": settings.restore_from},
        )
    if control is None and settings.restore_from:
        report.step("restoring the data directory from the archive")
        await asyncio.get_running_loop().run_in_executor(None, _restore, settings.restore_from, settings, datadir)
        return True
    if control is not None and control.state != STATE_NEEDS_BASE_BACKUP:
        if control.role == ROLE_PRIMARY and settings.replica_of:
            log.warning(
                "this data directory belongs to a primary (perhaps a promoted replica); ignoring replica_of. "
                "To make it a replica, use kvctl rejoin",
                extra={"replica_of": settings.replica_of},
            )
        await asyncio.get_running_loop().run_in_executor(None, drop_wal_before_snapshot, datadir, control)
        return True
    if control is not None:
        recorded = control.primary_url
        replica_of = replica_of_flag or recorded or settings.replica_of
        if not replica_of:
            raise ConfigError("this data directory needs a base backup, but names no primary: set --replica-of")
        if replica_of_flag and recorded and replica_of_flag != recorded:
            log.warning(
                "taking the base backup from the primary named by --replica-of, not the one in control",
                extra={"replica_of": replica_of, "control": recorded},
            )
        clear_for_base_backup(datadir)
        return await _take_base_backup(settings, datadir, replica_of, control.system_identifier, stop, report)
    if not settings.replica_of:
        initdb(datadir)
        log.info("initialised a new data directory", extra={"data_dir": str(datadir.root)})
        return True
    create_layout(datadir)
    return await _take_base_backup(settings, datadir, settings.replica_of, None, stop, report)


def _restore(url: str, settings: Settings, datadir: DataDir) -> None:
    log.info("restoring the data directory from the archive's latest point", extra={"restore_from": url})
    stores = open_archive(url, settings.archive_key_file, settings.archive_key)
    result = restore(stores, datadir.root, Target())
    log.info("restored from the archive", extra={"restore_from": url, **result.document()})


async def _take_base_backup(
    settings: Settings,
    datadir: DataDir,
    primary_url: str,
    system_identifier: int | None,
    stop: asyncio.Event,
    report: StartReport,
) -> bool:
    """Retry, backing off, until the base backup is taken (True) or `stop` is set."""
    delay_s = BASE_BACKUP_RETRY_FIRST_S
    while not stop.is_set():
        progress = report.step(f"taking a base backup from {primary_url}", unit="bytes")
        try:
            await take_base_backup(datadir, settings, primary_url, system_identifier, progress)
            return True
        except (ReplicationError, httpx.HTTPError, OSError, SnapshotError) as error:
            log.warning("base backup failed; retrying", extra={"primary": primary_url, "error": str(error)})
            # A step with no count: the start timeout keeps being extended while this node waits.
            report.step(f"waiting for the primary {primary_url}: base backup failed: {error}")
        try:
            await asyncio.wait_for(stop.wait(), delay_s)
        except TimeoutError:
            delay_s = min(delay_s * 2, BASE_BACKUP_RETRY_MAX_S)
    return False
