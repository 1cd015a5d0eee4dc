"""One node's life: lock, initdb, recovery, serving, background work, shutdown.

Everything runs in ONE process: granian's embedded server drives the RSGI app on this
process's event loop (its Rust I/O threads work outside the GIL). There are no
worker processes, so a SIGKILL leaves nothing of the node behind, and the data
directory lock dies with it.

The HTTP server starts before recovery, so /health answers and /ready says 503 while
a large WAL replays in a thread; every other route answers 503 until then.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from kvstore.replication.basebackup import clear_for_base_backup, drop_wal_before_snapshot, take_base_backup
from kvstore.replication.protocol import ReplicationError
from kvstore.replication.roles import Roles

from . import background, listener
from .api.app import App
from .api.rsgi import Admission, RsgiAdapter
from .audit import AuditLog
from .auth import Authenticator
from .catalog_changes import CatalogChanges
from .catalog_health import CatalogHealth
from .catalog_start import CatalogStart
from .catalog_store import CatalogStore
from .checkpoint import Checkpointer
from .config import ConfigError, Settings
from .control import ROLE_PRIMARY, STATE_NEEDS_BASE_BACKUP, STATE_RUNNING, STATE_SHUT_DOWN, read_control
from .datadir import DataDir, DataDirLock, create_layout, initdb, make_root
from .engine import Engine
from .services import assemble
from .snapshot import SnapshotError
from .status import status_document
from .supervisor import Supervisor
from .wal.format import format_lsn
from .wal.policy import FsyncPolicy

log = logging.getLogger(__name__)

RESTART_GRACE_S = 0.3


class Node:
    def __init__(self, settings: Settings, replica_of_flag: str | None = None) -> None:
        self.settings = settings
        # --replica-of given on the command line: it names the primary even when control
        # names another (settings.replica_of from the environment or config.toml does not).
        self._replica_of_flag = replica_of_flag.rstrip("/") if replica_of_flag else None
        self.datadir = DataDir(settings.data_dir)
        self._lock = DataDirLock(self.datadir)
        self.engine: Engine
        self.auth: Authenticator
        self.checkpointer: Checkpointer
        self.audit: AuditLog
        self.catalog_store: CatalogStore
        self.catalog_changes: CatalogChanges
        self.catalog_health: CatalogHealth
        self._ready = False
        self.started_at = time.time()
        self._stop = asyncio.Event()
        self.stopping = asyncio.Event()  # long-lived responses end when this is set
        self.supervisor = Supervisor()
        self.catalog_start: CatalogStart
        self._http: list[tuple[listener.Listener, asyncio.Task[None]]] = []  # the main listener, the operator's
        self.app = App(self)
        self.recovery_seconds: float | None = None
        self.restart_requested: str | None = None
        self._before_exec: Callable[[], None] | None = None
        self.roles: Roles  # the role this node has, and its changes: built once recovered

    @property
    def ready(self) -> bool:
        """Recovered, and (a replica fresh from a fuzzy base backup) replayed to the point where
        its snapshot is consistent: before that a read could see a key older than it was."""
        if not self._ready or not self.is_replica:
            return self._ready
        return self.engine.store.applied_lsn >= self.checkpointer.control.consistent_lsn

    @property
    def url(self) -> str:
        return f"http://{self.settings.listen}"

    # What the API reads of the role (the rest it reads of `roles`).
    @property
    def is_replica(self) -> bool:
        return self.roles.is_replica

    @property
    def timeline(self) -> int:
        return self.roles.timeline

    # -- start ---------------------------------------------------------------------

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT (or `request_stop`), then shut down cleanly."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        make_root(self.datadir)
        self._lock.acquire()
        try:
            await self._start_http()
            if not await self._prepare_datadir():
                return  # asked to stop while waiting for a primary
            await self._recover()
            sealed_upgrade = self.catalog_start.check_signing_keys()
            if self.is_replica:
                await self.roles.start_as_replica(self._replica_of_flag)
            elif not self.catalog_start.exists():
                await self.catalog_start.bootstrap()
            await self.checkpointer.update_control(state=STATE_RUNNING)
            gc.freeze()  # recovered objects never need a cyclic GC scan again
            self._start_background()
            if not self.is_replica:
                await self.roles.start_as_primary()
            takes_writes = not self.is_replica and self.engine.read_only_reason is None
            self.catalog_start.complete(takes_writes)
            if sealed_upgrade is not None and takes_writes:
                self._spawn("catalog-seal", lambda: self.catalog_start.seal_signing_keys(*sealed_upgrade))
            self._ready = True
            log.info(
                "ready", extra={"url": self.url, "fsync": self.settings.fsync.value, "keys": len(self.engine.store)}
            )
            print(f"kvstored: ready at {self.url}; log in with: kvctl login --url {self.url} --user admin", flush=True)
            await self._stop.wait()
        finally:
            await self._shutdown()
            if self._before_exec is not None:
                self._before_exec()
            self._lock.release()

    def request_stop(self) -> None:
        self._stop.set()

    def request_restart(self, reason: str, before_exec: Callable[[], None] | None = None) -> None:
        """Stop, then start again as the same process (kvstored execs itself).

        `before_exec` changes the data directory once the node has stopped writing, still
        under its lock; the final checkpoint is skipped then, so the snapshot stays what
        `before_exec` planned with. The stop waits a moment so the current response goes out.
        """
        self.restart_requested = reason
        self._before_exec = before_exec
        asyncio.get_running_loop().call_later(RESTART_GRACE_S, self.request_stop)

    async def _prepare_datadir(self) -> bool:
        """A new primary is initialised here; a new replica, or one whose control says it
        needs a base backup, is filled from its primary. False if asked to stop meanwhile."""
        control = read_control(self.datadir.control) if self.datadir.exists() else None
        if control is not None and control.state != STATE_NEEDS_BASE_BACKUP:
            if control.role == ROLE_PRIMARY and self.settings.replica_of:
                log.warning(
                    "this data directory belongs to a primary (perhaps a promoted replica); ignoring replica_of. "
                    "To make it a replica, use kvctl rejoin",
                    extra={"replica_of": self.settings.replica_of},
                )
            await asyncio.get_running_loop().run_in_executor(None, drop_wal_before_snapshot, self.datadir, control)
            return True
        if control is not None:
            recorded = control.primary_url
            replica_of = self._replica_of_flag or recorded or self.settings.replica_of
            if not replica_of:
                raise ConfigError("this data directory needs a base backup, but names no primary: set --replica-of")
            if self._replica_of_flag and recorded and self._replica_of_flag != recorded:
                log.warning(
                    "taking the base backup from the primary named by --replica-of, not the one in control",
                    extra={"replica_of": replica_of, "control": recorded},
                )
            clear_for_base_backup(self.datadir)
            return await self._take_base_backup(replica_of, control.system_identifier)
        if not self.settings.replica_of:
            initdb(self.datadir)
            log.info("initialised a new data directory", extra={"data_dir": str(self.datadir.root)})
            return True
        create_layout(self.datadir)
        return await self._take_base_backup(self.settings.replica_of, None)

    async def _take_base_backup(self, primary_url: str, system_identifier: int | None) -> bool:
        """Retry, backing off, until the base backup is taken (True) or the node is asked to stop."""
        delay_s = 0.5
        while not self._stop.is_set():
            try:
                await take_base_backup(self.datadir, self.settings, primary_url, system_identifier)
                return True
            except (ReplicationError, httpx.HTTPError, OSError, SnapshotError) as error:
                log.warning("base backup failed; retrying", extra={"primary": primary_url, "error": str(error)})
            try:
                await asyncio.wait_for(self._stop.wait(), delay_s)
            except TimeoutError:
                delay_s = min(delay_s * 2, 10.0)
        return False

    async def _start_http(self) -> None:
        """The main listener and, when configured, the operator's (README, "Connection limits")."""
        settings = self.settings
        listener.raise_open_files_limit(
            settings.max_connections + (settings.operator_max_connections if settings.operator_listen else 0)
        )
        admission = Admission(settings)
        sockets = [(listener.bind(settings.listen_host, settings.listen_port, settings.listen_backlog), False)]
        if settings.operator_address is not None:
            try:
                sockets.append((listener.bind(*settings.operator_address, settings.listen_backlog), True))
            except OSError:
                sockets[0][0].close()
                raise
        for sock, operator in sockets:
            server = listener.listener(
                sock,
                RsgiAdapter(self.app, admission, operator=operator),
                settings,
                settings.operator_max_connections if operator else settings.max_connections,
            )
            task = asyncio.create_task(server.serve(), name="http-operator" if operator else "http")
            self._http.append((server, task))
        await asyncio.sleep(0)
        for _server, task in self._http:
            if task.done():
                task.result()  # raise a start-up error now
            task.add_done_callback(self._on_http_stopped)

    def _on_http_stopped(self, task: asyncio.Task[None]) -> None:
        if not self._stop.is_set():  # the server ended without being asked: stop the node on purpose
            error = None if task.cancelled() else task.exception()
            log.critical("HTTP server stopped unexpectedly; shutting down", exc_info=error)
            self.request_stop()

    async def _recover(self) -> None:
        services = await assemble(self.settings, self.datadir)
        self.engine, self.checkpointer, self.audit = services.engine, services.checkpointer, services.audit
        self.catalog_store, self.catalog_changes = services.catalog_store, services.catalog_changes
        self.catalog_health, self.auth = services.catalog_health, services.auth
        self.recovery_seconds = services.recovery_seconds
        self.catalog_start = CatalogStart(
            self.settings,
            self.datadir.root,
            self.engine,
            self.checkpointer,
            self.catalog_store,
            self.catalog_changes,
            self.auth,
            self.supervisor.spawn,
        )
        self.roles = Roles(
            self.settings,
            self.datadir,
            self.engine,
            self.checkpointer,
            self.supervisor,
            self.stopping,
            self.request_restart,
            is_replica=services.is_replica,
            history=services.history,
        )

    # -- background work -------------------------------------------------------------

    def _start_background(self) -> None:
        settings = self.settings
        self._spawn("checkpointer", lambda: background.schedule_checkpoints(settings, self.engine, self.checkpointer))
        self._spawn("loop-lag", background.measure_loop_lag)
        writer = self.engine.writer
        assert writer is not None
        if settings.fsync is FsyncPolicy.INTERVAL:
            self._spawn("wal-interval-sync", writer.run_interval_sync)

    def _spawn(self, name: str, run: Callable[[], Awaitable[object]]) -> None:
        self.supervisor.spawn(name, run)

    def status(self) -> dict[str, Any]:
        return status_document(self)

    # -- stop ----------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Stop accepting, stop background work, final checkpoint, mark a clean shutdown."""
        self._ready = False
        self._stop.set()  # an expected stop of the HTTP server from here on
        self.stopping.set()
        if hasattr(self, "roles"):
            self.roles.stop()
        for server, _task in self._http:
            server.stop()
        for server, task in self._http:
            try:
                await asyncio.wait_for(task, self.settings.shutdown_timeout_s)
            except (TimeoutError, Exception):
                log.exception("HTTP server did not stop cleanly")
            server.close()
        await self.supervisor.stop()
        if not hasattr(self, "checkpointer"):
            return  # recovery never finished: leave the data directory as it was
        writer = self.engine.writer
        if writer is not None and writer.failure is None and self._before_exec is None:
            try:
                await self.checkpointer.checkpoint("shutdown")
                await self.checkpointer.update_control(state=STATE_SHUT_DOWN)
            except Exception:
                log.exception("final checkpoint failed; the next start will recover from the WAL")
        if writer is not None:
            await writer.close()
        self.checkpointer.close()
        self.audit.close()
        if hasattr(self, "auth"):  # not when the cluster key was refused
            self.auth.hashing.close()
        log.info("shut down", extra={"committed_lsn": format_lsn(self.engine.committed_lsn)})
