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
from collections.abc import Callable
from typing import Any

from kvstore.replication.roles import Roles

from . import background, listener
from .api.app import App
from .api.rsgi import Admission, RsgiAdapter
from .config import Settings
from .datadir import DataDir, DataDirLock, make_root
from .services import Services, assemble
from .start_report import StartReport
from .startup import prepare_datadir
from .status import status_document
from .supervisor import Supervisor

log = logging.getLogger(__name__)

RESTART_GRACE_S = 0.3
CONSISTENT_POLL_S = 0.05


class Node:
    def __init__(self, settings: Settings, replica_of_flag: str | None = None) -> None:
        self.settings = settings
        # --replica-of given on the command line: it names the primary even when control
        # names another (settings.replica_of from the environment or config.toml does not).
        self._replica_of_flag = replica_of_flag.rstrip("/") if replica_of_flag else None
        self.datadir = DataDir(settings.data_dir)
        self._lock = DataDirLock(self.datadir)
        # Once recovered (_recover): the services, and the API's view of them (engine,
        # checkpointer, audit, catalog_changes, catalog_health, auth) and of the role (roles).
        self._services: Services | None = None
        self._ready = False
        self.started_at = time.time()
        self._stop = asyncio.Event()
        self.stopping = asyncio.Event()  # long-lived responses end when this is set
        self.supervisor = Supervisor()
        self._http: list[tuple[listener.Listener, asyncio.Task[None]]] = []  # the main listener, the operator's
        self.app = App(self)
        self.recovery_seconds: float | None = None
        self.restart_requested: str | None = None
        self._before_exec: Callable[[], None] | None = None
        self.start_report = StartReport()  # STATUS, READY, STOPPING, WATCHDOG to systemd (Type=notify)

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
        report, notifier = self.start_report, self.start_report.notifier
        if notifier.watchdog_interval_s is not None:
            self.supervisor.spawn("watchdog", lambda: background.ping_watchdog(notifier))
        reporting = asyncio.create_task(report.run(), name="start-report")
        try:
            await self._start_http()
            if not await prepare_datadir(self.settings, self.datadir, self._replica_of_flag, self._stop, report):
                return  # asked to stop while waiting for a primary
            services = await self._recover()
            report.step("taking the role")
            catalog_start, roles = services.catalog_start, self.roles
            sealed_upgrade = catalog_start.check_signing_keys()
            if roles.is_replica:
                await roles.start_as_replica(self._replica_of_flag)
            elif not catalog_start.exists():
                await catalog_start.bootstrap()
            await services.mark_running()
            gc.freeze()  # recovered objects never need a cyclic GC scan again
            background.start(self.supervisor.spawn, self.settings, services.engine, services.checkpointer)
            if not roles.is_replica:
                await roles.start_as_primary()
            takes_writes = not roles.is_replica and services.engine.read_only_reason is None
            catalog_start.complete(takes_writes)
            if sealed_upgrade is not None and takes_writes:
                self.supervisor.spawn("catalog-seal", lambda: catalog_start.seal_signing_keys(*sealed_upgrade))
            self._ready = True
            if await self._until_consistent():
                reporting.cancel()
                log.info(
                    "ready", extra={"url": self.url, "fsync": self.settings.fsync.value, "keys": len(self.engine.store)}
                )
                print(
                    f"kvstored: ready at {self.url}; log in with: kvctl login --url {self.url} --user admin", flush=True
                )
                notifier.ready(f"ready at {self.url} ({'replica' if self.is_replica else 'primary'})")
            await self._stop.wait()
        finally:
            reporting.cancel()
            await self._shutdown()
            if self._before_exec is not None:
                self._before_exec()
            self._lock.release()
            notifier.close()

    def request_stop(self) -> None:
        if not self._stop.is_set() and self.restart_requested is None:
            self.start_report.notifier.stopping()
        self._stop.set()

    def request_restart(self, reason: str, before_exec: Callable[[], None] | None = None) -> None:
        """Stop, then start again as the same process (kvstored execs itself).

        `before_exec` changes the data directory once the node has stopped writing, still
        under its lock; the final checkpoint is skipped then, so the snapshot stays what
        `before_exec` planned with. The stop waits a moment so the current response goes out.
        """
        self.restart_requested = reason
        self._before_exec = before_exec
        self.start_report.notifier.reloading(f"restarting: {reason}")  # READY=1 again once started anew
        asyncio.get_running_loop().call_later(RESTART_GRACE_S, self.request_stop)

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

    async def _until_consistent(self) -> bool:
        """Wait until `ready` (a replica fresh from a fuzzy base backup replays to the point where
        its snapshot is consistent first); False if asked to stop before."""
        if not self.ready:
            self.start_report.step("replaying to the base backup's consistent point")
        while not self.ready:
            if self._stop.is_set():
                return False
            await asyncio.sleep(CONSISTENT_POLL_S)
        return True

    async def _recover(self) -> Services:
        progress = self.start_report.step("recovering the data directory", unit="entries and records")
        services = await assemble(self.settings, self.datadir, self.supervisor.spawn, progress)
        self.engine, self.checkpointer, self.audit = services.engine, services.checkpointer, services.audit
        self.catalog_changes, self.catalog_health, self.auth = (
            services.catalog_changes,
            services.catalog_health,
            services.auth,
        )
        self.recovery_seconds = services.recovery_seconds
        self.roles = Roles(
            self.settings,
            self.datadir,
            services.engine,
            services.checkpointer,
            self.supervisor,
            self.stopping,
            self.request_restart,
            is_replica=services.is_replica,
            history=services.history,
        )
        self._services = services
        return services

    def status(self) -> dict[str, Any]:
        return status_document(self)

    # -- stop ----------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Stop accepting, stop background work, final checkpoint, mark a clean shutdown."""
        self._ready = False
        self._stop.set()  # an expected stop of the HTTP server from here on
        self.stopping.set()
        if self._services is not None:
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
        if self._services is None:
            return  # recovery never finished: leave the data directory as it was
        # After `before_exec` is planned, the snapshot must stay the one it planned with.
        await self._services.close(final_checkpoint=self._before_exec is None)
