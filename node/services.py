"""Assembly: a node's services built from its settings and its recovered data directory.

The engine and its WAL writer, the checkpointer, the audit log, the catalog (store,
changes, health, start) and the authenticator, each handed only what it uses; the metrics
that read them are bound here too. The lifecycle (server.py) calls `assemble` once recovery
is done, keeps what it returns, and `Services.close` as it stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from kvstore.replication import timelines

from . import catalog, cluster_key, idempotency, metrics
from .audit import AuditLog
from .auth import Authenticator
from .catalog_changes import CatalogChanges
from .catalog_health import CatalogHealth
from .catalog_start import CatalogStart, Spawn, signing_keys_sealed
from .catalog_store import CatalogStore
from .checkpoint import Checkpointer
from .config import ConfigError, Settings
from .control import ROLE_REPLICA, STATE_RUNNING, STATE_SHUT_DOWN
from .datadir import DataDir
from .engine import Engine
from .passwords import HashingPool
from .progress import Progress
from .recovery import recover
from .wal.format import format_lsn
from .wal.segments import list_segments
from .wal.writer import WalWriter
from .writes import now_ms

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Services:
    engine: Engine
    checkpointer: Checkpointer
    audit: AuditLog
    catalog_store: CatalogStore
    catalog_changes: CatalogChanges
    catalog_health: CatalogHealth
    auth: Authenticator
    catalog_start: CatalogStart
    is_replica: bool  # what control recorded: the role this node starts in
    history: list[timelines.Switch]  # how its timeline descends from timeline 1
    recovery_seconds: float

    async def mark_running(self) -> None:
        """Control says `in production`: a stop from here on without a final checkpoint is a crash."""
        await self.checkpointer.update_control(state=STATE_RUNNING)

    async def close(self, final_checkpoint: bool) -> None:
        """Stop writing: a final checkpoint (unless the WAL failed, or `final_checkpoint` is
        False) marking a clean shutdown, then close the WAL, the audit log and the hashing pool."""
        writer = self.engine.writer
        if writer is not None and writer.failure is None and final_checkpoint:
            try:
                await self.checkpointer.checkpoint("shutdown")
                await self.checkpointer.update_control(state=STATE_SHUT_DOWN)
            except Exception:
                log.exception("final checkpoint failed; the next start will recover from the WAL")
        if writer is not None:
            await writer.close()
        self.checkpointer.close()
        self.audit.close()
        self.auth.hashing.close()
        log.info("shut down", extra={"commit_lsn": format_lsn(self.engine.committed_lsn)})


def _disk_bytes(datadir: DataDir, blocks: str) -> int:
    """`blocks` (a statvfs field counting fragments) of the WAL directory's file system, in bytes."""
    stats = os.statvfs(datadir.wal)
    return int(getattr(stats, blocks)) * stats.f_frsize


async def assemble(settings: Settings, datadir: DataDir, spawn: Spawn, progress: Progress | None = None) -> Services:
    """Recover the data directory (in a thread) and build the services on what it holds;
    `spawn` starts the catalog's background writes. Raises ConfigError when the cluster key
    cannot open this catalog's signing secrets. `progress` counts the recovery's work."""
    loop = asyncio.get_running_loop()
    recovered = await loop.run_in_executor(None, recover, datadir, progress)
    is_replica = recovered.control.role == ROLE_REPLICA
    engine = Engine(recovered.store)
    writer = WalWriter(
        datadir.wal,
        timeline=recovered.timeline,
        end_lsn=recovered.end_lsn,
        segment_size_bytes=settings.wal_segment_size_bytes,
        policy=settings.fsync,
        interval_s=settings.fsync_interval_ms / 1000,
        on_flushed=engine.on_wal_flushed,
        on_failed=engine.on_wal_failed,
        follow=is_replica,
    )
    engine.attach(writer)
    control = recovered.control.replace(timeline=recovered.timeline)
    checkpointer = Checkpointer(engine, datadir, control, settings.snapshots_keep)
    audit = AuditLog(
        datadir.log / "audit.jsonl",
        settings.audit_log_max_bytes,
        settings.audit_log_keep,
        settings.audit_refusal_window_s,
        settings.audit_refusal_window_max_lines,
    )
    catalog_store = CatalogStore(engine, settings.max_scan_limit)
    try:
        sealer = cluster_key.load(
            settings.cluster_key,
            settings.cluster_key_file,
            settings.cluster_key_previous,
            datadir.root,
            may_generate=not is_replica and not signing_keys_sealed(catalog_store),
        )
    except cluster_key.ClusterKeyError as error:
        raise ConfigError(str(error)) from None
    hashing = HashingPool(settings.login_hash_threads, settings.login_queue_max)
    metrics.bind_gauge(metrics.LOGIN_HASHES_PENDING, lambda: hashing.pending)
    auth = await loop.run_in_executor(
        None, Authenticator, catalog_store, settings.initial_auth_policy, audit, sealer, hashing
    )
    store = engine.store
    # Every catalog document is checked now and again whenever it changes: a damaged one is
    # reported (log, /v1/status, metric) and ignored, never fatal. A change also moves the
    # catalog's epoch, which the authenticator's caches follow. Remembered answers to requests
    # with an Idempotency-Key are system keys but no catalog: they neither move it nor get checked.
    health = CatalogHealth()
    documents = store.scan(catalog.SYS_PREFIX, None, len(store) + 1, now_ms())[0]
    health.check_all(item for item in documents if not item[0].startswith(idempotency.PREFIX))
    store.watch(catalog.SYS_PREFIX, health.check, unwatched=(idempotency.PREFIX,))
    metrics.bind_gauge(metrics.CATALOG_DAMAGED_DOCUMENTS, lambda: len(health))
    metrics.bind_gauge(metrics.COMMIT_WAITERS, lambda: engine.commit_waiters)
    metrics.bind_gauge(metrics.KEY_COUNT, lambda: len(store))
    metrics.bind_gauge(metrics.STORE_KEYS, lambda: len(store))
    metrics.bind_gauge(metrics.MEMORY_USAGE_BYTES.labels("store_estimate"), store.memory_estimate)
    metrics.bind_gauge(metrics.STORE_REVISION, lambda: store.revision)
    metrics.bind_gauge(metrics.WAL_END_LSN, lambda: writer.end_lsn)
    metrics.WAL_WRITTEN_BYTES.bind(lambda: writer.written_bytes)
    metrics.bind_gauge(metrics.WAL_SIZE_BYTES, lambda: sum(s.size_bytes for s in list_segments(datadir.wal)))
    # f_bavail, not f_bfree: the blocks reserved for root are no use to a node that is not root.
    metrics.bind_gauge(metrics.WAL_DISK_FREE_BYTES, lambda: _disk_bytes(datadir, "f_bavail"))
    metrics.bind_gauge(metrics.WAL_DISK_SIZE_BYTES, lambda: _disk_bytes(datadir, "f_blocks"))
    catalog_changes = CatalogChanges(engine, catalog_store, sealer)
    return Services(
        engine=engine,
        checkpointer=checkpointer,
        audit=audit,
        catalog_store=catalog_store,
        catalog_changes=catalog_changes,
        catalog_health=health,
        auth=auth,
        catalog_start=CatalogStart(
            settings, datadir.root, engine, checkpointer, catalog_store, catalog_changes, auth, spawn
        ),
        is_replica=is_replica,
        history=timelines.read_history(datadir.timelines, recovered.timeline),
        recovery_seconds=recovered.seconds,
    )
