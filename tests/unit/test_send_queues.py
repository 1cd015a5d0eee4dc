"""node/api/send_queues.py: reading the kernel's send queues of this machine's connections, and
a stream's window on them (room, then stalled once the queue stays full)."""

from __future__ import annotations

import asyncio
import math
import socket
import sys
from collections.abc import Iterator

import pytest

from kvstore.node.api.send_queues import (
    DRAINED_BYTES,
    Connection,
    Room,
    SendQueues,
    SendWindow,
    connection_of,
    parse,
    read_send_queues,
)

# As Linux prints them (host byte order words); the header line is skipped.
_TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1
   1: 0100007F:1F90 0100007F:C822 01 0002A000:00000000 01:00000014 00000000     0        0 2 1
   2: 0100007F:1F91 0100007F:C823 01 00000010:00000000 01:00000014 00000000     0        0 3 1
"""
_TCP6 = """  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D431 01 00000400:00000000
   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000200007F:D432 01 00000000:00000000
"""


@pytest.mark.skipif(sys.byteorder != "little", reason="the sample listings are a little-endian machine's")
def test_parse_reads_the_port_s_connections_with_ipv4_mapped_peers_as_ipv4() -> None:
    assert dict(parse(_TCP, socket.AF_INET, [8080])) == {
        (8080, "0.0.0.0", 0): 0,  # the listener itself
        (8080, "127.0.0.1", 0xC822): 0x2A000,
    }
    assert dict(parse(_TCP6, socket.AF_INET6, [8080])) == {
        (8080, "::1", 0xD431): 0x400,
        (8080, "127.0.0.2", 0xD432): 0,
    }


def test_connection_of_a_request_matches_the_listing_s_spelling() -> None:
    assert connection_of("127.0.0.1:8080", "127.0.0.1:51362") == (8080, "127.0.0.1", 51362)
    assert connection_of("[::]:8080", "[::ffff:127.0.0.1]:40000") == (8080, "127.0.0.1", 40000)
    assert connection_of("[::1]:8080", "[::1]:40000") == (8080, "::1", 40000)
    assert connection_of("", "127.0.0.1:1") is None  # a request built in-process


@pytest.fixture
def stalled() -> Iterator[tuple[Connection, socket.socket]]:
    """A loopback connection whose receiver reads nothing: the sender's queue fills."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        receiver = socket.create_connection(server.getsockname())
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sender, peer = server.accept()
        with receiver, sender:
            sender.setblocking(False)
            try:
                while True:
                    sender.send(bytes(65536))
            except BlockingIOError:
                pass
            yield (sender.getsockname()[1], peer[0], peer[1]), receiver


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/net/tcp is Linux's")
def test_the_kernel_lists_a_stalled_connection_s_full_queue(stalled: tuple[Connection, socket.socket]) -> None:
    connection, _receiver = stalled
    queues = read_send_queues([connection[0]])
    assert queues is not None and queues[connection] > DRAINED_BYTES


class _Queues(SendQueues):
    """Send queues a test sets, looked at as often as asked."""

    def __init__(self, queued: int) -> None:
        super().__init__(interval_s=0.01)
        self.queued = queued
        self.looks = 0

    async def after(self, moment: float) -> tuple[float, dict[Connection, int]]:
        await asyncio.sleep(0.01)
        self.looks += 1
        return moment + 1, {CONNECTION: self.queued}


CONNECTION: Connection = (8080, "127.0.0.1", 40000)


def test_a_window_sends_its_credit_then_waits_for_the_queue_to_drain() -> None:
    async def run() -> None:
        queues = _Queues(queued=0)
        stopping = asyncio.Event()
        with SendWindow(queues, CONNECTION, credit_bytes=1000, stall_timeout_s=math.inf) as window:
            window.sent(999)
            assert await window.room(stopping) is Room.YES and queues.looks == 0  # within its credit
            window.sent(1)
            assert await window.room(stopping) is Room.YES and queues.looks == 1  # drained: credit again
            assert window.unconfirmed == 0

    asyncio.run(run())


def test_a_window_whose_queue_stays_full_stalls_and_a_stop_ends_the_wait() -> None:
    async def run() -> None:
        queues = _Queues(queued=DRAINED_BYTES)
        stopping = asyncio.Event()
        with SendWindow(queues, CONNECTION, credit_bytes=1, stall_timeout_s=0.05) as window:
            window.sent(1)
            assert await window.room(stopping) is Room.STALLED and window.queued == DRAINED_BYTES
        with SendWindow(queues, CONNECTION, credit_bytes=1, stall_timeout_s=math.inf) as window:
            window.sent(1)
            waiting = asyncio.ensure_future(window.room(stopping))
            await asyncio.sleep(0.05)
            stopping.set()
            assert await asyncio.wait_for(waiting, 30) is Room.STOPPING

    asyncio.run(run())
