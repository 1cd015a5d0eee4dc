"""Holding a streamed response back while its client does not read, from the kernel's view.

granian's RSGI `send_bytes` returns at once, whatever the client has read (granian#885:
backpressure came to its ASGI and WSGI streams only): what the client has not taken piles up
in granian's memory. The kernel knows better: a connection whose peer stops reading keeps
bytes in its send queue, and Linux lists every socket's queue (`tx_queue`, bytes written and
not yet acknowledged) in /proc/net/tcp and /proc/net/tcp6. One `SendQueues` per node reads
them, at most once per SAMPLE_INTERVAL_S however many streams ask, and only when one asks;
each stream's `SendWindow` waits on it before handing granian more (README, "Watching
changes").
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import socket
import sys
import time
from collections.abc import Iterable, Iterator
from enum import Enum

from .http import client_address

log = logging.getLogger(__name__)

PROC_NET_TCP = ("/proc/net/tcp", "/proc/net/tcp6")
SAMPLE_INTERVAL_S = 0.05  # how stale a send queue may be: a stream waits at most this long for a look
# Below this the client has taken what it was sent: at most a segment or two waiting for a
# delayed ACK. A connection whose client stopped reading holds its whole send buffer, which
# Linux sizes at setup for twice the first congestion window (20 segments: more than this)
# and grows from there: a high-water mark such as 256 KiB would never see a client that
# stalls before its buffer grew. So a stream waits for its queue to drain instead.
DRAINED_BYTES = 16 * 1024

# (local port, remote IP as ipaddress prints it, remote port): one TCP connection of the node.
Connection = tuple[int, str, int]


def _address(hex_address: str, family: socket.AddressFamily) -> str:
    """An address as /proc/net/tcp{,6} prints it: 32-bit words in hex, each in host byte order."""
    raw = b"".join(int(hex_address[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(hex_address), 8))
    return _normal(socket.inet_ntop(family, raw))


def _normal(address: str) -> str:
    ip = ipaddress.ip_address(address)
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None  # a dual-stack socket's IPv4 peer
    return str(mapped or ip)


def parse(text: str, family: socket.AddressFamily, ports: Iterable[int]) -> Iterator[tuple[Connection, int]]:
    """The send queue of each connection in a /proc/net/tcp{,6} listing whose local port is one of `ports`."""
    wanted = {f":{port:04X}" for port in ports}
    for line in text.splitlines()[1:]:
        fields = line.split(None, 5)
        local, remote, queues = fields[1], fields[2], fields[4]
        if local[-5:] not in wanted:
            continue
        remote_hex, _, remote_port = remote.partition(":")
        connection = (int(local[-4:], 16), _address(remote_hex, family), int(remote_port, 16))
        yield connection, int(queues.partition(":")[0], 16)


def connection_of(server: str, client: str) -> Connection | None:
    """The connection of a request from RSGI's `host:port` of both ends; None when unknown
    (a request built in-process)."""
    if not server or not client:
        return None
    return int(server.rsplit(":", 1)[1]), _normal(client_address(client)), int(client.rsplit(":", 1)[1])


def read_send_queues(ports: Iterable[int]) -> dict[Connection, int] | None:
    """Every listed connection's send queue, or None when the kernel does not list them (not Linux)."""
    ports = tuple(ports)
    queues: dict[Connection, int] = {}
    found = False
    for path, family in zip(PROC_NET_TCP, (socket.AF_INET, socket.AF_INET6), strict=True):
        try:
            with open(path) as listing:
                text = listing.read()
        except OSError:
            continue  # no IPv6 in this kernel, or no /proc at all
        found = True
        queues.update(parse(text, family, ports))
    return queues if found else None


class SendQueues:
    """The node's one reader of the kernel's send queues, shared by every stream that waits."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.available = True  # until a read finds no listing
        self._ports: dict[int, int] = {}  # local port: streams that look at it
        self._queues: dict[Connection, int] = {}
        self._taken_at = -math.inf
        self._reading: asyncio.Future[None] | None = None

    def watch_port(self, port: int) -> None:
        self._ports[port] = self._ports.get(port, 0) + 1

    def unwatch_port(self, port: int) -> None:
        left = self._ports[port] - 1
        if left:
            self._ports[port] = left
        else:
            del self._ports[port]

    async def after(self, moment: float) -> tuple[float, dict[Connection, int]]:
        """A look taken after `moment` (time.monotonic) and when it was taken; one read at a
        time serves every stream waiting for it."""
        while self._taken_at <= moment and self.available:
            if self._reading is None:
                self._reading = asyncio.ensure_future(self._read())
            await asyncio.shield(self._reading)
        return self._taken_at, self._queues

    async def _read(self) -> None:
        try:
            await asyncio.sleep(max(0.0, self._taken_at + self.interval_s - time.monotonic()))
            taken_at = time.monotonic()
            queues = await asyncio.get_running_loop().run_in_executor(None, read_send_queues, tuple(self._ports))
            if queues is None:
                self.available = False
                log.warning(
                    "no /proc/net/tcp: slow watchers are neither held back nor cut off", extra={"files": PROC_NET_TCP}
                )
            else:
                self._queues, self._taken_at = queues, taken_at
        finally:
            self._reading = None


class Room(Enum):
    YES = "yes"
    STALLED = "stalled"
    STOPPING = "stopping"


class SendWindow:
    """One stream's hold on what granian buffers for it: up to `credit_bytes` may go out
    unconfirmed; beyond that the stream waits for its connection's send queue to drain, and
    after `stall_timeout_s` of waiting in vain it is stalled. granian then holds at most about
    `credit_bytes` plus the batch that used the last of it."""

    def __init__(
        self, queues: SendQueues, connection: Connection | None, credit_bytes: int, stall_timeout_s: float
    ) -> None:
        self._queues = queues
        self.connection = connection
        self._credit_bytes = credit_bytes
        self.stall_timeout_s = stall_timeout_s
        self.unconfirmed = 0
        self._sent_at = -math.inf
        self.queued = 0  # the send queue seen last

    def __enter__(self) -> SendWindow:
        if self.connection is not None:
            self._queues.watch_port(self.connection[0])
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.connection is not None:
            self._queues.unwatch_port(self.connection[0])

    def sent(self, size: int) -> None:
        self.unconfirmed += size
        self._sent_at = time.monotonic()

    async def room(self, stopping: asyncio.Event) -> Room:
        if self.unconfirmed < self._credit_bytes or self.connection is None:
            return Room.YES
        started = time.monotonic()
        seen = self._sent_at
        while not stopping.is_set():
            seen, queues = await self._queues.after(seen)
            if not self._queues.available:
                return Room.YES
            # Not listed: the connection is gone, and the next send says so.
            self.queued = queues.get(self.connection, 0)
            if self.queued < DRAINED_BYTES:
                self.unconfirmed = 0
                return Room.YES
            if time.monotonic() - started >= self.stall_timeout_s:
                return Room.STALLED
        return Room.STOPPING
