"""kvstore_connections_active's counting against the kernel's own table: real sockets on a
listening port, over IPv4 and IPv6, noted as RSGI names their peers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from kvstore.node.api.connections import Connections


@contextmanager
def _accepted(family: socket.AddressFamily, host: str) -> Iterator[tuple[int, socket.socket, socket.socket]]:
    """(listening port, client socket, server side) of one established connection."""
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.bind((host, 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection((host, port)) as client:
            server, _ = listener.accept()
            with server:
                yield port, client, server


def _rsgi_client(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_open_connections_by_role(family: socket.AddressFamily, host: str) -> None:
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.fail("this test needs IPv6 on the loopback interface")
    with _accepted(family, host) as (port, client, _server), _accepted(family, host) as (port2, silent, _):
        connections = Connections([port, port2])
        assert connections.count() == {"anonymous": 2}
        connections.note(_rsgi_client(client), ("writer", "reader"))
        assert connections.count() == {"anonymous": 1, "reader,writer": 1}
        connections.note(_rsgi_client(silent), ())
        assert connections.count() == {"anonymous": 0, "reader,writer": 1, "none": 1}
        assert Connections([port]).count() == {"anonymous": 1}  # only the ports named are counted
    # Both closed: nothing counted, and the notes are dropped.
    assert connections.count() == {"anonymous": 0}
    assert not connections._roles
