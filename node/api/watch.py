"""GET /v1/watch: a change feed of committed writes under a prefix, as NDJSON.

Events are read back from the WAL up to the committed LSN (never a write a crash could undo),
so a watcher holds no buffer of its own and never slows a writer: a slow one only reads
older WAL. One whose client stops reading is held back, then cut off (send_queues.py). An
event's `lsn` is the end of its record (a transaction's changes share it), and `from_lsn`
resumes after it: the progress lines carry the same kind of position.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
from collections.abc import AsyncGenerator, Iterator
from typing import Any, Protocol

import orjson

from .. import metrics, records
from ..catalog import Principal
from ..config import Settings
from ..datadir import DataDir
from ..engine import Engine
from ..errors import Forbidden, Gone, TooManyRequests
from ..listing import read_ranges
from ..wal.format import format_lsn
from ..wal.reader import WalCorruption, WalScan
from ..wal.segments import list_segments
from ..wal_cursor import WalCursor
from .http import Request, StreamResponse, lsn_from_text
from .routes import AUTHENTICATED, Route
from .send_queues import Room, SendQueues, SendWindow

log = logging.getLogger(__name__)

WATCH_BATCH_RECORDS = 1000
# What one chunk holds at most (but a whole record), and what a watcher may have out unread
# before it waits for its client (send_queues.SendWindow): granian holds about two for it.
WATCH_BATCH_BYTES = 1024 * 1024
WATCH_PROGRESS_S = 5.0  # an idle watcher hears how far it has seen this often


class WatchNode(Protocol):
    engine: Engine
    datadir: DataDir
    settings: Settings
    stopping: asyncio.Event


def _line(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document) + b"\n"


def _changes(record: records.Record) -> Iterator[records.Record]:
    """The SETs and DELs a record holds (a transaction's, in order); nothing for the others."""
    if record[0] == records.TXN:
        yield from record[1]
    elif record[0] in (records.SET, records.DEL):
        yield record


def _event(change: records.Record, lsn: str) -> dict[str, Any]:
    if change[0] == records.SET:
        _, key, value, version, _created, expires_at_ms = change
        return {
            "type": "set",
            "key": key,
            "value_base64": base64.b64encode(value).decode("ascii"),
            "version": version,
            "expires_at": expires_at_ms or None,
            "lsn": lsn,
        }
    kind = "expire" if len(change) == 4 else "del"  # the expirer's DEL carries a fourth field
    return {"type": kind, "key": change[1], "value_base64": None, "version": change[2], "expires_at": None, "lsn": lsn}


class Watchers:
    """How many watchers this node serves, against its cap (settings.max_watchers), and the
    kernel's send queues they wait on. Streams that have not started yet are not counted: a
    burst may pass the cap by a few."""

    def __init__(self, cap: int, send_queues: SendQueues) -> None:
        self.cap = cap
        self.count = 0
        self.send_queues = send_queues

    def started(self) -> None:
        self.count += 1
        metrics.WATCHERS.inc()

    def ended(self) -> None:
        self.count -= 1
        metrics.WATCHERS.dec()


def routes(node: WatchNode, watchers: Watchers) -> list[Route]:
    async def watch(request: Request, principal: Principal) -> StreamResponse:
        request.only_query(("prefix", "from_lsn"))
        prefix = request.query.get("prefix", "")
        if not principal.superuser and not read_ranges(principal, prefix):
            raise Forbidden(
                f"user {principal.name!r} may read no key starting with {prefix!r}: no read grant covers it"
            )
        engine = node.engine
        raw_from = request.query.get("from_lsn")
        from_lsn = engine.committed_lsn if raw_from is None else lsn_from_text(raw_from, "from_lsn")
        segments = list_segments(node.datadir.wal)
        oldest = segments[0].start_lsn if segments else engine.committed_lsn
        if from_lsn < oldest:
            raise Gone(
                f"the WAL no longer reaches back to {format_lsn(from_lsn)}: re-read, then watch from a newer LSN",
                oldest_lsn=format_lsn(oldest),
            )
        if watchers.count >= watchers.cap:
            raise TooManyRequests(f"this node serves at most {watchers.cap} watchers (max_watchers)")
        window = SendWindow(
            watchers.send_queues,
            await watchers.send_queues.locate(request.server, request.client),
            WATCH_BATCH_BYTES,
            node.settings.watch_stall_timeout_s,
        )
        return StreamResponse(
            200,
            _follow(node, watchers, window, principal, request.client, prefix, from_lsn),
            # The stream's end (a cut-off above all) ends the connection: granian closes it once
            # the client has read what was sent.
            [("content-type", "application/x-ndjson"), ("connection", "close")],
        )

    return [Route("GET", "/v1/watch", watch, AUTHENTICATED)]


def _read_batch(node: WatchNode, principal: Principal, prefix: str, from_lsn: int, until_lsn: int) -> tuple[bytes, int]:
    """The event lines of the records from `from_lsn` to `until_lsn` (at most a batch of
    them: WATCH_BATCH_RECORDS, about WATCH_BATCH_BYTES) and where the batch ended."""
    scan = WalScan(node.datadir.wal, records.decode, from_lsn=from_lsn, until_lsn=until_lsn)
    lines: list[bytes] = []
    size = 0
    end = from_lsn
    for item in itertools.islice(scan, WATCH_BATCH_RECORDS):
        if size >= WATCH_BATCH_BYTES:
            break
        end = item.end_lsn
        lsn = format_lsn(item.end_lsn)
        for change in _changes(item.record):
            key = change[1]
            if key.startswith(prefix) and principal.can("read", key):
                lines.append(_line(_event(change, lsn)))
                size += len(lines[-1])
    if end == from_lsn:
        end = until_lsn  # only segment headers lay between
    return b"".join(lines), end


def _cut_off(window: SendWindow, principal: Principal, client: str) -> bytes:
    """The last line for a watcher whose client read nothing for watch_stall_timeout_s."""
    metrics.WATCH_CUTOFFS.labels("slow_watcher").inc()
    log.warning(
        "slow watcher cut off",
        extra={
            "reason": "slow_watcher",
            "user": principal.name,
            "address": client,
            "stalled_s": window.stall_timeout_s,
            "send_queue_bytes": window.queued,
        },
    )
    return _line(
        {
            "type": "cancelled",
            "reason": "slow_watcher",
            "message": f"the client read nothing for {window.stall_timeout_s:g} s (watch_stall_timeout_s): "
            "read faster, then watch again from the last lsn",
        }
    )


async def _follow(
    node: WatchNode,
    watchers: Watchers,
    window: SendWindow,
    principal: Principal,
    client: str,
    prefix: str,
    from_lsn: int,
) -> AsyncGenerator[bytes, None]:
    loop = asyncio.get_running_loop()
    engine = node.engine
    cursor = WalCursor(engine.progress, from_lsn, lambda: engine.committed_lsn, node.stopping)
    watchers.started()  # counted once streaming: a generator never started never runs its finally
    try:
        while True:
            until = cursor.bound()
            if cursor.position < until:
                # Read no more WAL than the client can take (send_queues.py).
                room = await window.room(node.stopping)
                if room is Room.STALLED:
                    yield _cut_off(window, principal, client)
                    return
                if room is Room.YES:
                    try:
                        chunk, cursor.position = await loop.run_in_executor(
                            None, _read_batch, node, principal, prefix, cursor.position, until
                        )
                    except (WalCorruption, OSError) as exc:
                        # A watcher too slow for the WAL the node keeps: a checkpoint recycled
                        # what it had not read yet. It re-reads and watches again from a newer LSN.
                        reason = f"compacted: the WAL moved on before this watcher read it ({exc})"
                        yield _line({"type": "cancelled", "reason": reason})
                        return
                    if chunk:
                        window.sent(len(chunk))
                        yield chunk
                    continue
            if node.stopping.is_set():
                yield _line({"type": "cancelled", "reason": "the node is stopping"})
                return
            if not await cursor.wait_for_more(WATCH_PROGRESS_S):
                yield _line({"type": "progress", "lsn": format_lsn(cursor.position)})
    finally:
        watchers.ended()
