"""Executing writes: preconditions, after-images, WAL append, commit, visibility.

All writes run on the event loop, one at a time between awaits, so INCR and
compare-and-set on a key are serializable without locks. A write:

1. reads the *latest* state of its keys: the committed store overlaid with writes
   that are logged but not yet committed (`_overlay`), so back-to-back INCRs never
   lose an increment;
2. checks preconditions and builds an after-image record with a fresh revision;
3. appends it to the WAL (no I/O on the loop) and records it as uncommitted;
4. waits until the WAL reports the record durable under the fsync policy and, under
   synchronous replication, until the synchronous replicas confirm it; only then is
   the record applied to the store, in LSN order.

Readers read the store alone, so a read never returns an uncommitted write (no
dirty reads), while writers see everything before them. Under synchronous replication
a write is not visible here before the replicas hold it, so no read sees a write that
a failover could lose (etcd's rule; PostgreSQL shows it and delays only the answer).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from . import metrics, records
from .commit_waiters import CommitWaiters
from .errors import KvError, NotAnInteger, NotFound, PreconditionFailed, ReadOnly, Unavailable
from .idempotency import Remember
from .store import CREATED_AT_MS, EXPIRES_AT_MS, VALUE, VERSION, Entry, Store, is_live
from .wal.format import format_lsn
from .wal.writer import WalFailed, WalWriter
from .wal_cursor import WalProgress
from .writes import INT64_MAX, INT64_MIN, TxnOp, WriteResult, check_preconditions, now_ms

# Logged but not committed (a stalled fsync, synchronous replicas away): every such write holds
# its after-image in memory, so beyond this much WAL new writes are refused (503), not queued.
MAX_UNCOMMITTED_WAL_BYTES = 64 * 1024 * 1024


def _record_keys(record: records.Record) -> list[str]:
    kind = record[0]
    if kind == records.SET or kind == records.DEL:
        return [record[1]]
    if kind == records.TXN:
        return [op[1] for op in record[1]]
    return []


class Engine:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.writer: WalWriter | None = None
        self._overlay: dict[str, tuple[int, Entry | None]] = {}  # key -> (end LSN, latest entry)
        self._uncommitted: deque[tuple[int, records.Record]] = deque()
        self._waiters = CommitWaiters()
        self._next_revision = store.revision + 1
        self.committed_lsn = store.applied_lsn
        self.read_only_reason: str | None = None  # why writes are refused, if they are
        self._refusal: type[KvError] = Unavailable
        self.wal_failed = False
        # Synchronous replication (replication/primary.py): the LSN the synchronous replicas
        # have confirmed, which bounds what commits; and the wait for a commit, with its timeout.
        self.replicas_confirmed: Callable[[], int] | None = None
        self.commit_gate: Callable[[int], Awaitable[None]] | None = None
        self.progress = WalProgress()  # followers of the WAL (wal_cursor.py) wait on it
        self.time_marks = False  # archiving is on: log TIME records (_mark_time)
        self._marked_ms = 0

    def attach(self, writer: WalWriter) -> None:
        self.writer = writer
        self.committed_lsn = max(self.committed_lsn, writer.write_lsn)

    # -- reads ---------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        return self.store.get(key, now_ms())

    def check_readable(self) -> None:
        """Refuse reads while the store holds WAL that the synchronous replicas have not
        confirmed: what a restarted or promoted primary recovered may be on no replica yet."""
        if self.committed_lsn < self.store.applied_lsn:
            raise Unavailable(
                f"reads wait until the synchronous replicas confirm {format_lsn(self.store.applied_lsn)}, the WAL "
                f"this node recovered (confirmed: {format_lsn(self.committed_lsn)}); retry shortly",
                retry_after_s=1,
            )

    # -- writes --------------------------------------------------------------------

    async def put(
        self,
        key: str,
        value: bytes,
        ttl_s: int | None = None,
        if_version: int | None = None,
        if_absent: bool = False,
        remember: Remember[WriteResult] | None = None,
    ) -> WriteResult:
        now = now_ms()
        current = self._latest(key, now)
        if if_version is not None or if_absent:
            try:
                check_preconditions(key, current, if_version, if_absent)
            except PreconditionFailed as failed:
                await self._refuse(failed, key)
        version = self._take_revision()
        created_at_ms = current[CREATED_AT_MS] if current is not None else now
        expires_at_ms = now + ttl_s * 1000 if ttl_s else 0
        entry = (value, version, created_at_ms, expires_at_ms)
        record = records.set_record(key, *entry)
        if remember is None:  # (`remember`: a write sent with an Idempotency-Key, idempotency.py)
            lsn = self._log(record, ((key, entry),))
        else:
            outcome = WriteResult(version, 0, current is None)
            lsn = self._log_remembered(remember, [record], [(key, entry)], version, outcome)
        await self.wait_visible(lsn)
        return WriteResult(version, lsn, created=current is None)

    async def delete(
        self, key: str, if_version: int | None = None, remember: Remember[WriteResult] | None = None
    ) -> WriteResult:
        current = self._latest(key, now_ms())
        try:
            if current is None:
                raise NotFound(f"key {key!r} does not exist", key=key)
            check_preconditions(key, current, if_version, False)
        except KvError as error:
            await self._refuse(error, key)
        version = self._take_revision()
        record = records.del_record(key, version)
        if remember is None:
            lsn = self._log(record, ((key, None),))
        else:
            lsn = self._log_remembered(remember, [record], [(key, None)], version, WriteResult(version, 0))
        await self.wait_visible(lsn)
        return WriteResult(version, lsn)

    async def incr(
        self, key: str, by: int, remember: Remember[tuple[int, WriteResult]] | None = None
    ) -> tuple[int, WriteResult]:
        now = now_ms()
        current = self._latest(key, now)
        base = 0
        if current is not None:
            try:
                base = int(current[VALUE].decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                await self._refuse(NotAnInteger(f"value of {key!r} is not an integer; INCR needs one", key=key), key)
        result = base + by
        if not INT64_MIN <= result <= INT64_MAX:
            error = NotAnInteger(f"increment would leave the 64-bit integer range ({base} + {by})", key=key)
            await self._refuse(error, key)
        version = self._take_revision()
        created_at_ms = current[CREATED_AT_MS] if current is not None else now
        expires_at_ms = current[EXPIRES_AT_MS] if current is not None else 0  # INCR keeps the TTL, as Redis
        entry = (str(result).encode("ascii"), version, created_at_ms, expires_at_ms)
        record = records.set_record(key, *entry)
        if remember is None:
            lsn = self._log(record, ((key, entry),))
        else:
            outcome = (result, WriteResult(version, 0, current is None))
            lsn = self._log_remembered(remember, [record], [(key, entry)], version, outcome)
        await self.wait_visible(lsn)
        return result, WriteResult(version, lsn, created=current is None)

    async def txn(
        self, ops: list[TxnOp], remember: Remember[tuple[list[dict[str, Any]], WriteResult]] | None = None
    ) -> tuple[list[dict[str, Any]], WriteResult]:
        """All ops or none, in one TXN record; later ops see earlier ones. A read-only one writes
        nothing, so it has nothing to remember either."""
        now = now_ms()
        view: dict[str, Entry | None] = {}
        read_lsn = 0  # newest uncommitted write this transaction looked at
        version = self._next_revision
        changes: list[tuple[str, Entry | None]] = []
        ops_out: list[records.Record] = []
        results: list[dict[str, Any]] = []
        overlay_get = self._overlay.get
        for index, op in enumerate(ops):
            kind, key, value, ttl_s, if_version, if_absent = op
            if key in view:
                current = view[key]
            else:
                pending = overlay_get(key)
                if pending is None:
                    current = self.store.get(key, now)
                else:
                    read_lsn = max(read_lsn, pending[0])
                    current = pending[1]
                    if current is not None and not is_live(current, now):
                        current = None
            if if_version is not None or if_absent:
                try:
                    check_preconditions(key, current, if_version, if_absent)
                except PreconditionFailed as failed:
                    await self.wait_visible(read_lsn)  # decided on uncommitted data? let it commit
                    raise PreconditionFailed(f"op {index}: {failed.message}", op=index, **failed.details) from None
            if kind == "set":
                created_at_ms = current[CREATED_AT_MS] if current is not None else now
                expires_at_ms = now + ttl_s * 1000 if ttl_s else 0
                entry: Entry | None = (value, version, created_at_ms, expires_at_ms)
                ops_out.append([records.SET, key, value, version, created_at_ms, expires_at_ms])
                results.append({"op": "set", "key": key, "version": version})
            elif kind == "del":
                results.append({"op": "del", "key": key, "deleted": current is not None})
                if current is None:
                    continue  # nothing to delete: no record, and nothing for the overlay
                entry = None
                ops_out.append([records.DEL, key, version])
            else:
                results.append({"op": "check", "key": key, "version": current[VERSION] if current else None})
                continue
            view[key] = entry
            changes.append((key, entry))
        if not ops_out:
            # Read-only: still never report on data that is not committed yet.
            self.check_readable()
            await self.wait_visible(read_lsn)
            return results, WriteResult(self.store.revision, max(read_lsn, self.committed_lsn))
        self._take_revision()
        if remember is None:
            lsn = self._log(records.txn_record(ops_out), changes)
        else:
            outcome = (results, WriteResult(version, 0))
            lsn = self._log_remembered(remember, ops_out, changes, version, outcome)
        await self.wait_visible(lsn)
        return results, WriteResult(version, lsn)

    async def _refuse(self, error: KvError, key: str) -> NoReturn:
        """Raise `error`, but only once the uncommitted write it was decided on has committed:
        an error must not reveal a write that could still fail (no dirty reads)."""
        pending = self._overlay.get(key)
        if pending is not None:
            await self.wait_visible(pending[0])
        raise error

    def pending_lsn(self, key: str) -> int | None:
        """The LSN of a logged, not yet committed write of `key`, if there is one."""
        pending = self._overlay.get(key)
        return None if pending is None else pending[0]

    def log_expired(self, key: str) -> None:
        """Log the DEL of a key whose TTL ran out (expiry.py), not waiting for its commit."""
        self._log(records.del_record(key, self._take_revision(), expired=True), ((key, None),))

    def _latest(self, key: str, now: int) -> Entry | None:
        pending = self._overlay.get(key)
        if pending is None:
            return self.store.get(key, now)
        entry = pending[1]
        if entry is None or not is_live(entry, now):
            return None
        return entry

    def _take_revision(self) -> int:
        self._next_revision += 1
        return self._next_revision - 1

    def refuse_writes(self, reason: str, error: type[KvError] = ReadOnly) -> None:
        """From now on writes fail with `error(reason)`: a replica, or a fenced former primary."""
        self.read_only_reason, self._refusal = reason, error

    def accept_writes(self) -> None:
        if self.wal_failed:
            raise Unavailable(f"the WAL failed; restart the node ({self.read_only_reason})")
        self.read_only_reason, self._refusal = None, Unavailable

    async def wait_visible(self, lsn: int) -> None:
        """Wait until `lsn` commits, under synchronous replication with its timeout."""
        if self.commit_gate is None or lsn <= self.committed_lsn:
            await self.wait_for_commit(lsn)
        else:
            await self.commit_gate(lsn)

    def check_writable(self) -> None:
        """Raise what a write here would: a replica's or a fenced node's 421, a failed WAL's 503."""
        if self.read_only_reason is not None:
            raise self._refusal(self.read_only_reason)

    def _log_remembered(self, remember: Remember[Any], *args: Any) -> int:
        # The mark first: the remembered answer states its record's end LSN, predicted before it is logged.
        self._mark_time()
        return remember.log(lambda record, changes: self._log(record, changes, marked=True), self.writer, *args)

    def _mark_time(self) -> None:
        """A TIME record before the first write of each millisecond: a restore can stop at a time."""
        # Archiving off: no clock read on the write path (`and` stops before now_ms()).
        if self.time_marks and self.read_only_reason is None and (ms := now_ms()) != self._marked_ms:
            self._marked_ms = ms
            self._log(records.time_record(ms), (), control=True)

    def _log(self, record: records.Record, changes: Any, control: bool = False, marked: bool = False) -> int:
        if self.read_only_reason is not None:
            raise self._refusal(self.read_only_reason)
        assert self.writer is not None, "engine used before a WAL writer was attached"
        backlog = self.writer.end_lsn - self.committed_lsn
        if backlog > MAX_UNCOMMITTED_WAL_BYTES and not control:
            waiting_for = "the synchronous replicas" if self.replicas_confirmed is not None else "the WAL's fsync"
            raise Unavailable(
                f"{backlog} bytes of WAL wait for {waiting_for} to commit (limit {MAX_UNCOMMITTED_WAL_BYTES}); "
                "writes are refused until they do",
                retry_after_s=1,
            )
        if not (control or marked):
            self._mark_time()
        try:
            lsn = self.writer.append(records.encode(record))
        except WalFailed as error:
            raise Unavailable(str(error)) from None
        for key, entry in changes:
            self._overlay[key] = (lsn, entry)
        self._uncommitted.append((lsn, record))
        if self.writer.write_lsn >= lsn:  # fsync=interval/off: the record is already in the page cache
            self.on_wal_flushed(lsn, observe=False)
        return lsn

    def log_control_record(self, record: records.Record) -> int:
        """Log a record that changes no key (CHECKPOINT, TIMELINE_SWITCH)."""
        return self._log(record, (), control=True)

    async def wait_for_commit(self, lsn: int) -> None:
        if lsn <= self.committed_lsn:
            return
        if self.wal_failed:
            raise Unavailable(str(self.read_only_reason))
        await self._waiters.wait(lsn)

    @property
    def commit_waiters(self) -> int:
        """Requests waiting for an LSN to commit (abandoned ones not yet dropped included)."""
        return len(self._waiters)

    @property
    def write_lsn(self) -> int:
        """Written to this node's WAL under its fsync policy (fsynced under always): what replicas
        may be sent, committed or not."""
        return self.writer.write_lsn if self.writer is not None else self.committed_lsn

    # -- commit, called by the WAL writer and by synchronous replication ----------------

    def on_wal_flushed(self, write_lsn: int, observe: bool = True) -> None:
        applied = self.commit_up_to(self._confirmed(write_lsn))
        if observe:
            metrics.WAL_COMMIT_BATCH_RECORDS.observe(applied)
        self.progress.notify()  # replicas follow the flushed LSN

    def on_replicas_confirmed(self) -> None:
        """The synchronous replicas confirmed more: commit what is durable here and there."""
        self.commit_up_to(self._confirmed(self.write_lsn))

    def _confirmed(self, lsn: int) -> int:
        return lsn if self.replicas_confirmed is None else min(lsn, self.replicas_confirmed())

    def hold_until_confirmed(self) -> None:
        """Synchronous replication starts: whatever the store holds beyond what the replicas
        confirmed stays unreadable (check_readable) until they do."""
        self.committed_lsn = min(self.committed_lsn, self._confirmed(self.committed_lsn))

    def commit_up_to(self, lsn: int) -> int:
        """Apply every logged record up to `lsn`, release its waiters; returns how many."""
        store, overlay, uncommitted = self.store, self._overlay, self._uncommitted
        applied = 0
        while uncommitted and uncommitted[0][0] <= lsn:
            end_lsn, record = uncommitted.popleft()
            store.apply(record, end_lsn)
            for key in _record_keys(record):
                pending = overlay.get(key)
                if pending is not None and pending[0] == end_lsn:
                    del overlay[key]
            applied += 1
        if lsn > self.committed_lsn:
            self.committed_lsn = lsn
            self.progress.notify()
        self._waiters.release_up_to(lsn)
        return applied

    def on_wal_failed(self, error: BaseException) -> None:
        self.wal_failed = True
        reason = f"WAL write failed ({error}); writes are refused until the node is restarted"
        self.refuse_writes(reason, Unavailable)
        self.fail_waiters(Unavailable(reason))

    def fail_waiters(self, error: KvError) -> None:
        """No commit will come (the WAL failed, the node is fenced or stopping): the writes
        waiting for one get `error`, their outcome unknown to their clients."""
        self._waiters.fail_all(error)

    # -- a replica -------------------------------------------------------------------

    def apply_replicated(self, items: list[tuple[records.Record, int]]) -> None:
        """Apply records received from the primary (already durable in this node's WAL)."""
        store = self.store
        for record, end_lsn in items:
            if end_lsn > store.applied_lsn:  # a base backup's snapshot already holds older ones
                store.apply(record, end_lsn)
        self._next_revision = max(self._next_revision, store.revision + 1)
        if items:
            self.commit_up_to(max(self.committed_lsn, items[-1][1]))
