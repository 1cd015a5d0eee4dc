"""node/api/send_queues.py: the kernel's send queue of one connection (netlink sock_diag), and
a stream's window on it (room, then stalled once the queue stays full). Linux, as the node
and its CI are: nothing here is skipped elsewhere."""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Iterator

import pytest

from kvstore.node.api.send_queues import DRAINED_BYTES, Connection, Room, SendQueues, SendWindow


def _stall(listen_host: str, connect_host: str) -> Iterator[tuple[str, str, socket.socket]]:
    """A connection whose receiver reads nothing, its sender's queue full: (the listener's and
    the client's `host:port` as RSGI names them, the receiving end)."""
    family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
    with socket.create_server((listen_host, 0), family=family, dualstack_ipv6=listen_host == "::") as server:
        receiver = socket.create_connection((connect_host, server.getsockname()[1]))
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sender, peer = server.accept()
        with receiver, sender:
            sender.setblocking(False)
            try:
                while True:
                    sender.send(bytes(65536))
            except BlockingIOError:
                pass
            bracket = (lambda host: f"[{host}]") if family == socket.AF_INET6 else (lambda host: host)
            yield f"{bracket(listen_host)}:{server.getsockname()[1]}", f"{bracket(peer[0])}:{peer[1]}", receiver


@pytest.fixture
def stalled() -> Iterator[tuple[str, str, socket.socket]]:
    yield from _stall("127.0.0.1", "127.0.0.1")


@pytest.fixture
def stalled_on_wildcard() -> Iterator[tuple[str, str, socket.socket]]:
    yield from _stall("0.0.0.0", "127.0.0.1")


def test_the_kernel_tells_a_stalled_connection_s_full_queue_and_a_gone_one(
    stalled: tuple[str, str, socket.socket],
) -> None:
    server, client, receiver = stalled
    queues = SendQueues()
    connection = asyncio.run(queues.locate(server, client))
    assert connection is not None
    assert (queues.queued(connection) or 0) > DRAINED_BYTES
    receiver.close()
    family, local, local_port, remote, remote_port = connection
    assert queues.queued((family, local, local_port, remote, remote_port + 1)) is None  # no such connection


def test_a_wildcard_listener_s_connection_is_found_by_its_ports(
    stalled_on_wildcard: tuple[str, str, socket.socket],
) -> None:
    server, client, _receiver = stalled_on_wildcard
    queues = SendQueues()
    connection = asyncio.run(queues.locate(server, client))
    assert connection is not None and connection[1].startswith(socket.inet_aton("127.0.0.1"))
    assert (queues.queued(connection) or 0) > DRAINED_BYTES


def test_a_request_built_in_process_has_no_connection() -> None:
    assert asyncio.run(SendQueues().locate("", "")) is None


class _Queues(SendQueues):
    """A send queue a test sets (or that shrinks by `shrink` each look, down to `floor`), and
    how often it was looked at."""

    def __init__(self, queued: int, shrink: int = 0, floor: int = 0) -> None:
        super().__init__()
        self.size = queued
        self.shrink = shrink
        self.floor = floor
        self.looks = 0

    def queued(self, connection: Connection) -> int | None:
        self.looks += 1
        self.size = max(self.floor, self.size - self.shrink)
        return self.size


CONNECTION: Connection = (socket.AF_INET, bytes(16), 8080, bytes(16), 40000)


def test_a_window_sends_its_credit_then_waits_for_the_queue_to_drain() -> None:
    async def run() -> None:
        queues = _Queues(queued=0)
        stopping = asyncio.Event()
        window = SendWindow(queues, CONNECTION, credit_bytes=1000, stall_timeout_s=math.inf)
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
        window = SendWindow(queues, CONNECTION, credit_bytes=1, stall_timeout_s=0.05)
        window.sent(1)
        assert await window.room(stopping) is Room.STALLED and window.queued == DRAINED_BYTES
        window = SendWindow(queues, CONNECTION, credit_bytes=1, stall_timeout_s=math.inf)
        window.sent(1)
        waiting = asyncio.ensure_future(window.room(stopping))
        await asyncio.sleep(0.05)
        stopping.set()
        assert await asyncio.wait_for(waiting, 30) is Room.STOPPING

    asyncio.run(run())


def test_a_listener_named_by_host_name_is_found_as_a_wildcard_one(stalled: tuple[str, str, socket.socket]) -> None:
    server, client, _receiver = stalled
    queues = SendQueues()
    connection = asyncio.run(queues.locate(server.replace("127.0.0.1", "localhost"), client))
    assert connection is not None and (queues.queued(connection) or 0) > DRAINED_BYTES


def test_a_window_waits_for_a_client_that_reads_slowly_and_cuts_off_once_it_stops() -> None:
    async def run() -> None:
        # The client takes 1 byte a look: never drained, never stalled while it reads.
        queues = _Queues(queued=DRAINED_BYTES + 100, shrink=1, floor=DRAINED_BYTES + 20)
        window = SendWindow(queues, CONNECTION, credit_bytes=1, stall_timeout_s=0.2)
        window.sent(1)
        assert await window.room(asyncio.Event()) is Room.STALLED
        assert queues.looks > 80 and window.queued == DRAINED_BYTES + 20  # stalled only once it stopped reading

    asyncio.run(run())


@pytest.fixture
def stalled_on_dual_stack() -> Iterator[tuple[str, str, socket.socket]]:
    yield from _stall("::", "127.0.0.1")


def test_an_ipv4_client_of_a_dual_stack_listener_is_found(
    stalled_on_dual_stack: tuple[str, str, socket.socket],
) -> None:
    server, client, _receiver = stalled_on_dual_stack
    queues = SendQueues()
    for as_rsgi_names_it in (client, client.replace("[::ffff:", "").replace("]", "")):  # either spelling
        connection = asyncio.run(queues.locate(server, as_rsgi_names_it))
        assert connection is not None and (queues.queued(connection) or 0) > DRAINED_BYTES
