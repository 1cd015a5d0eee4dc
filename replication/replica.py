"""The replica's side: the WAL receiver, feedback, following a new primary (basebackup.py
takes the base backup a new replica starts from).

The receiver asks the primary for its WAL from the end of this node's own WAL, checks
every message and every record (protocol.py), appends the primary's bytes at the
primary's LSNs (the two WALs are byte-identical), fsyncs, then applies the records
with the same `Store.apply` that recovery uses, and reports write/flush/apply LSNs
back. Anything wrong on the wire drops the connection: nothing of a damaged message
is written or applied. Reconnects back off exponentially with jitter, capped.
When its primary is gone or no longer a primary, it looks among the primary URL and
`--peers` for the unfenced primary on the newest timeline and follows that one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from kvstore.node import metrics, records
from kvstore.node.checkpoint import Checkpointer
from kvstore.node.config import Settings
from kvstore.node.engine import Engine
from kvstore.node.errors import KvError
from kvstore.node.wal.format import format_lsn

from . import peers, protocol, timelines
from .protocol import Refusal, Refused, ReplicationError

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 10.0
FEEDBACK_INTERVAL_S = 1.0


class ReplicaRole(Protocol):
    """What the receiver reads of the node's role, and the changes of role it asks for."""

    @property
    def timeline(self) -> int: ...

    def adopt_timeline(self, timeline: int, switch: timelines.Switch) -> None: ...

    def rebootstrap(self, primary_url: str, reason: str) -> None: ...

    async def rejoin(self, primary_url: str) -> dict[str, Any]: ...


# -- streaming --------------------------------------------------------------------------


@dataclass(slots=True)
class ReceiverStatus:
    state: str = "starting"
    primary_url: str = ""
    primary_timeline: int | None = None
    primary_write_lsn: int = 0
    last_contact: float | None = None  # epoch seconds
    connected_since: float | None = None
    behind_since: float | None = None
    last_error: str | None = None
    reconnects: int = 0


class Receiver:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        checkpointer: Checkpointer,
        stopping: asyncio.Event,
        role: ReplicaRole,
        primary_url: str,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._checkpointer = checkpointer
        self._stopping = stopping
        self._role = role
        self.status = ReceiverStatus(primary_url=primary_url.rstrip("/"))
        self._feedback_due = asyncio.Event()
        self._logins = peers.PeerLogins(settings)

    # -- what /v1/status shows ---------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        status, store, writer = self.status, self._engine.store, self._engine.writer
        assert writer is not None
        now = time.time()
        lag_bytes = max(0, status.primary_write_lsn - store.applied_lsn)
        return {
            "state": status.state,
            "primary": status.primary_url,
            "primary_timeline": status.primary_timeline,
            "primary_write_lsn": format_lsn(status.primary_write_lsn),
            "lag_bytes": lag_bytes,
            "lag_s": round(now - status.behind_since, 3) if lag_bytes and status.behind_since else 0.0,
            "last_contact_s_ago": None if status.last_contact is None else round(now - status.last_contact, 3),
            "last_error": status.last_error,
            "reconnects": status.reconnects,
        }

    def lag_rows(self) -> list[tuple[str, float, float]]:
        described = self.describe()
        return [(self._settings.node_name, described["lag_bytes"], described["lag_s"])]

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        read_timeout = max(5.0, 5 * self._settings.replication_keepalive_s)  # keepalives prove the primary alive
        delay = BACKOFF_FIRST_S
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=read_timeout)) as client:
            feedback = asyncio.create_task(self._send_feedback(client))
            try:
                while not self._stopping.is_set():
                    try:
                        await self._session(client)
                        delay = BACKOFF_FIRST_S
                    except Refused as refused:
                        if await self._on_refused(client, refused):
                            return
                    except (ReplicationError, protocol.StreamError, httpx.HTTPError, ValueError) as error:
                        self._failed(error)
                    self.status.state = "reconnecting"
                    self.status.reconnects += 1
                    await self._sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, BACKOFF_MAX_S)
                    if not self._stopping.is_set():  # no new requests while the node shuts down
                        await self._find_primary(client)
            finally:
                feedback.cancel()

    def _failed(self, error: BaseException) -> None:
        text = f"{type(error).__name__}: {error}"
        if text != self.status.last_error:
            log.warning("replication stream failed; reconnecting", extra={"error": text})
        self.status.last_error = text

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _on_refused(self, client: httpx.AsyncClient, refused: Refused) -> bool:
        """Act on a primary's refusal; True when the receiver should stop."""
        self.status.last_error = f"{refused.refusal.value}: {refused}"
        if refused.refusal in (Refusal.WAL_REMOVED, Refusal.SLOT_LOST):
            log.warning("the primary no longer has this replica's WAL; taking a new base backup")
            self._role.rebootstrap(self.status.primary_url, str(refused))
            return True
        if refused.refusal is Refusal.DIVERGED:
            # The new primary's timeline is the truth; what only this replica holds was never
            # confirmed on it. Rewind (or re-bootstrap), keeping the divergent WAL in diverged/.
            log.warning("this replica's WAL diverged from the new timeline; rejoining", extra={"reason": str(refused)})
            try:
                await self._role.rejoin(self.status.primary_url)
                return True
            except KvError as error:
                self.status.last_error = f"rejoin failed: {error.message}"
                log.error("automatic rejoin failed", extra={"error": error.message})
                return False
        if refused.refusal in (Refusal.SYSTEM_MISMATCH, Refusal.AHEAD):
            self.status.state = refused.refusal.value
            log.error("replication stopped: %s", refused, extra={"code": refused.refusal.value})
            if refused.refusal is not Refusal.AHEAD:
                return True  # an operator must act; retrying cannot help
        return False

    async def _session(self, client: httpx.AsyncClient) -> None:
        status, writer = self.status, self._engine.writer
        assert writer is not None
        url = status.primary_url
        self.status.state = "connecting"
        headers = await self._logins.headers(client, url)
        params = {
            "from_lsn": str(writer.end_lsn),
            "timeline": str(self._role.timeline),
            "slot": self._settings.node_name,
            "system_identifier": str(self._checkpointer.control.system_identifier),
        }
        async with client.stream("GET", f"{url}/v1/replication/stream", params=params, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                self._logins.check(response, url)
                raise _refusal(url, response)
            status.state, status.connected_since, status.last_error = "streaming", time.time(), None
            log.info("streaming from the primary", extra={"primary": url, "from_lsn": format_lsn(writer.end_lsn)})
            decoder = protocol.StreamDecoder()
            async for chunk in response.aiter_raw():
                await self._receive(decoder.feed(chunk))
        raise ReplicationError(f"the primary at {url} ended the stream")

    async def _receive(self, messages: list[protocol.Message]) -> None:
        """Write, fsync, apply and acknowledge one chunk's messages (whatever was written, even
        when a later message in the chunk is bad)."""
        status, writer = self.status, self._engine.writer
        assert writer is not None
        items: list[tuple[records.Record, int]] = []
        try:
            for message in messages:
                status.last_contact = time.time()
                if isinstance(message, protocol.WalData):
                    decoded = [
                        (records.decode(frame.payload), frame.end_lsn) for frame in protocol.split_frames(message)
                    ]
                    writer.append_frames(message.lsn, message.frames)
                    items.extend(decoded)
                    status.primary_write_lsn = max(status.primary_write_lsn, message.end_lsn)
                    metrics.REPLICATION_RECEIVED_BYTES.inc(len(message.frames))
                elif isinstance(message, protocol.SegmentStart):
                    writer.start_segment(message.start_lsn, message.timeline)
                elif isinstance(message, protocol.Keepalive):
                    status.primary_write_lsn = max(status.primary_write_lsn, message.write_lsn)
                    status.primary_timeline = message.timeline
                    self._feedback_due.set()
                else:
                    raise protocol.refused(message.code, message.message)
        finally:
            if writer.end_lsn > writer.flush_lsn:
                await writer.sync()
            self._apply(items)
        now = time.time()
        if status.primary_write_lsn > self._engine.store.applied_lsn:
            status.behind_since = status.behind_since or now
        else:
            status.behind_since = None

    def _apply(self, items: list[tuple[records.Record, int]]) -> None:
        if not items:
            return
        self._engine.apply_replicated(items)
        for record, _ in items:
            if record[0] == records.TIMELINE_SWITCH:
                _, timeline, parent, switch_lsn, time_ms = record
                self._role.adopt_timeline(timeline, timelines.Switch(parent, switch_lsn, time_ms))
        self._feedback_due.set()

    async def _send_feedback(self, client: httpx.AsyncClient) -> None:
        """Positions to the primary after each applied batch, and at least every second."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._feedback_due.wait(), FEEDBACK_INTERVAL_S)
            self._feedback_due.clear()
            if self.status.state != "streaming":
                continue
            writer = self._engine.writer
            assert writer is not None
            body = {
                "slot": self._settings.node_name,
                "timeline": self._role.timeline,
                "write_lsn": writer.end_lsn,
                "flush_lsn": writer.flush_lsn,
                "apply_lsn": self._engine.store.applied_lsn,
            }
            url = self.status.primary_url
            try:
                headers = await self._logins.headers(client, url)
                response = await peers.request(
                    client, "POST", f"{url}/v1/replication/feedback", json=body, headers=headers
                )
                self._logins.check(response, url)
            except ReplicationError as error:
                log.debug("feedback failed", extra={"error": str(error)})

    async def _find_primary(self, client: httpx.AsyncClient) -> None:
        """After a failure: follow whichever known node is now the unfenced primary on the newest timeline."""
        candidates = dict.fromkeys([self.status.primary_url, *self._settings.peer_urls])
        ours = self._checkpointer.control.system_identifier
        best: tuple[int, str] | None = None
        for url in candidates:
            try:
                identity = await peers.identify(client, url, self._logins)
            except ReplicationError as error:
                log.debug("not a primary to follow", extra={"url": url, "error": str(error)})
                continue
            if not identity.takes_writes or identity.system_identifier != ours:
                continue
            if identity.timeline >= self._role.timeline and (best is None or identity.timeline > best[0]):
                best = (identity.timeline, url)
        if best is not None and best[1] != self.status.primary_url:
            log.warning(
                "following a new primary", extra={"old_primary": self.status.primary_url, "new_primary": best[1]}
            )
            self.status.primary_url = best[1]
            await self._checkpointer.update_control(primary_url=best[1])


def _refusal(url: str, response: httpx.Response) -> ReplicationError:
    """What a refused stream request means: a primary's 409 says what to do (see `_on_refused`)."""
    if response.status_code == 409:
        try:
            error = response.json()["error"]
            code, message = error["code"], error["message"]
        except (ValueError, KeyError, TypeError):
            pass
        else:
            if isinstance(code, str) and isinstance(message, str):
                known = protocol.refused(code, message)
                if isinstance(known, Refused):
                    return known
    return ReplicationError(f"stream from {url} refused: {peers.error_text(response)}")
