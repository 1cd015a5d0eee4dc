"""Holding a streamed response back while its client does not read, from the kernel's view.

granian's RSGI `send_bytes` returns at once, whatever the client has read (granian#885:
backpressure came to its ASGI and WSGI streams only): what the client has not taken piles up
in granian's memory. The kernel knows better: a connection whose peer stops reading keeps
bytes in its send queue (written, not yet acknowledged). Linux answers for one connection,
named by its addresses and ports, over a sock_diag netlink socket (what `ss` uses) in
microseconds. /proc/net/tcp lists the same queues, but every read walks the whole
connection table: ~30 ms of kernel time with 2,600 sockets. Each waiting stream's
`SendWindow` asks about its own connection before it hands granian more (README, "Watching
changes").
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import time
from enum import Enum

from .http import client_address

log = logging.getLogger(__name__)

# Below this the client has taken what it was sent: at most a segment or two waiting for a
# delayed ACK. A connection whose client stopped reading holds its whole send buffer, which
# Linux sizes at setup for twice the first congestion window (20 segments: more than this)
# and grows from there: a high-water mark such as 256 KiB would never see a client that
# stalls before its buffer grew. So a stream waits for its queue to drain instead.
DRAINED_BYTES = 16 * 1024
# A waiting stream looks again after 5 ms, then twice as long each time up to 50 ms: a client
# that reads resumes soon, a stalled one costs 20 lookups a second.
FIRST_LOOK_S = 0.005
LOOK_INTERVAL_S = 0.05

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NO_COOKIE = 0xFFFFFFFF
_ESTABLISHED_OR_CLOSE_WAIT = (1 << 1) | (1 << 8)  # TCP states: a response can still be sent
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_REQUEST = struct.Struct("=BBBxI")  # inet_diag_req_v2: family, protocol, extensions, states
_ENDS = struct.Struct("!HH16s16s")  # inet_diag_sockid: ports and addresses, in network order
_ID_TAIL = struct.Struct("=III")  # inet_diag_sockid: interface, cookie
_ANSWER = struct.Struct("=BBBB")  # inet_diag_msg: family, state, timer, retransmits
_QUEUES = struct.Struct("=IIIII")  # inet_diag_msg after the id: expires, rqueue, wqueue, uid, inode

# (family, local address, local port, remote address, remote port): one TCP connection of
# the node's, addresses packed (16 bytes, an IPv4 one zero-padded).
Connection = tuple[int, bytes, int, bytes, int]


def _request(family: int, ends: tuple[int, int, bytes, bytes], dump: bool) -> bytes:
    body = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, _ESTABLISHED_OR_CLOSE_WAIT)
    body += _ENDS.pack(*ends) + _ID_TAIL.pack(0, _NO_COOKIE, _NO_COOKIE)
    flags = _NLM_F_REQUEST | (_NLM_F_DUMP if dump else 0)
    return _HEADER.pack(_HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY, flags, 1, 0) + body


def _answers(data: bytes) -> tuple[list[tuple[Connection, int]], bool]:
    """The (connection, send queue) of each answer in one netlink read, and whether it ended
    the reply (a dump's last part, or an error: a connection not found)."""
    found: list[tuple[Connection, int]] = []
    offset = 0
    while offset < len(data):
        length, kind, _flags, _sequence, _port = _HEADER.unpack_from(data, offset)
        if kind in (_NLMSG_DONE, _NLMSG_ERROR):
            return found, True
        at = offset + _HEADER.size
        family = _ANSWER.unpack_from(data, at)[0]
        local_port, remote_port, local, remote = _ENDS.unpack_from(data, at + _ANSWER.size)
        queued = _QUEUES.unpack_from(data, at + _ANSWER.size + _ENDS.size + _ID_TAIL.size)[2]
        found.append(((family, local, local_port, remote, remote_port), queued))
        offset += (length + 3) & ~3
    return found, False


def _ask(netlink: socket.socket, request: bytes, dump: bool) -> list[tuple[Connection, int]]:
    """The answers to a request: one message for one connection (an error when there is no
    such connection), several reads ending in a DONE for a dump."""
    netlink.send(request)
    found: list[tuple[Connection, int]] = []
    ended = False
    while not ended:
        part, ended = _answers(netlink.recv(1 << 16))
        found += part
        ended = ended or not dump
    return found


def _open_netlink() -> socket.socket:
    netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
    netlink.settimeout(1.0)  # the kernel answers within send(); never hang the event loop on it
    return netlink


def _packed(address: str) -> tuple[int, bytes]:
    ip = ipaddress.ip_address(address)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return family, ip.packed.ljust(16, b"\0")


def _find_local(connection: Connection) -> Connection | None:
    """The connection with its local address, from a dump of the listener's family (the
    listener is on a wildcard address: RSGI names that, not the connection's own)."""
    family, _, local_port, remote, remote_port = connection
    with _open_netlink() as netlink:
        for found, _queued in _ask(netlink, _request(family, (0, 0, bytes(16), bytes(16)), dump=True), dump=True):
            if found[2] == local_port and found[3] == remote and found[4] == remote_port:
                return found
    return None


class SendQueues:
    """The node's netlink socket for send queues; None of it off Linux (logged once)."""

    def __init__(self) -> None:
        self._netlink: socket.socket | None = None
        self.available = hasattr(socket, "AF_NETLINK")
        if not self.available:
            log.warning("no netlink sock_diag on this system: slow watchers are neither held back nor cut off")

    async def locate(self, server: str, client: str) -> Connection | None:
        """The connection of a request from RSGI's `host:port` of both ends; None when the
        kernel cannot tell (a request built in-process, no netlink)."""
        if not self.available or not server or not client:
            return None
        server_host, _, server_port = server.rpartition(":")
        remote_family, remote = _packed(client_address(client))
        try:
            family, local = _packed(server_host.strip("[]"))
        except ValueError:  # a listener named by host name: found by a listing, as a wildcard one
            family, local = remote_family, bytes(16)
        if remote_family != family:  # an IPv4 peer of a dual-stack listener, as the kernel keeps it
            remote = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + remote[:4]).packed
        connection = (family, local, int(server_port), remote, int(client.rsplit(":", 1)[1]))
        if any(local):
            return connection
        try:
            return await asyncio.get_running_loop().run_in_executor(None, _find_local, connection)
        except OSError as error:
            self._unavailable(error)
            return None

    def queued(self, connection: Connection) -> int | None:
        """The bytes the connection has not had acknowledged; None once it is gone (or when
        netlink fails: then nothing is held back)."""
        if not self.available:
            return None
        family, local, local_port, remote, remote_port = connection
        try:
            if self._netlink is None:
                self._netlink = _open_netlink()
            request = _request(family, (local_port, remote_port, local, remote), dump=False)
            answers = _ask(self._netlink, request, dump=False)
        except OSError as error:
            self._unavailable(error)
            return None
        # With no such connection the kernel answers for the listener on its port instead.
        return answers[0][1] if answers and answers[0][0][2:] == connection[2:] else None

    def _unavailable(self, error: OSError) -> None:
        self.available = False
        log.warning(
            "netlink sock_diag failed: slow watchers are neither held back nor cut off", extra={"error": str(error)}
        )


class Room(Enum):
    YES = "yes"
    STALLED = "stalled"
    STOPPING = "stopping"


class SendWindow:
    """One stream's hold on what granian buffers for it: up to `credit_bytes` may go out
    unconfirmed; beyond that the stream waits for its connection's send queue to drain. It is
    stalled once the queue has not shrunk (the client took nothing) for `stall_timeout_s`: a
    client that reads slowly is waited for, however long. granian holds at most about
    `credit_bytes` plus the batch that used the last of it."""

    def __init__(
        self, queues: SendQueues, connection: Connection | None, credit_bytes: int, stall_timeout_s: float
    ) -> None:
        self._queues = queues
        self.connection = connection
        self._credit_bytes = credit_bytes
        self.stall_timeout_s = stall_timeout_s
        self.unconfirmed = 0
        self.queued = 0  # the send queue seen last

    def sent(self, size: int) -> None:
        self.unconfirmed += size

    async def room(self, stopping: asyncio.Event) -> Room:
        if self.unconfirmed < self._credit_bytes or self.connection is None:
            return Room.YES
        progress_at = time.monotonic()
        pause = FIRST_LOOK_S
        previous: int | None = None
        while not stopping.is_set():
            queued = self._queues.queued(self.connection)
            if queued is None or queued < DRAINED_BYTES:  # drained, or gone: the next send says so
                self.unconfirmed = 0
                return Room.YES
            self.queued = queued
            if previous is not None and queued < previous:  # the client took some: not stalled
                progress_at = time.monotonic()
            elif time.monotonic() - progress_at >= self.stall_timeout_s:
                return Room.STALLED
            previous = queued
            try:
                await asyncio.wait_for(stopping.wait(), pause)
            except TimeoutError:
                pause = min(pause * 2, LOOK_INTERVAL_S)
        return Room.STOPPING
