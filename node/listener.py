"""The HTTP listeners: sockets the node binds itself, served by granian's embedded server.

granian binds its own sockets with SO_REUSEPORT, so any other process that sets it too could
bind the node's address and take part of its connections. Here the node binds the socket
(SO_REUSEADDR only, to pass a killed node's TIME_WAIT leftovers) and hands granian the file
descriptor, so the address stays the node's alone while it runs.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
from typing import Any

from granian._granian import SocketHolder
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.embed import Server

from .config import ConfigError, Settings
from .logs import GRANIAN_LOG_CONFIG

log = logging.getLogger(__name__)

# Open files the node needs beside its connections: WAL segments, snapshots, replication
# streams, outgoing HTTP clients.
FILES_BESIDE_CONNECTIONS = 256


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket on host:port that no other process can share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    return sock


def raise_open_files_limit(connections: int) -> None:
    """Raise the soft open-files limit to the hard one; a limit that cannot hold `connections`
    is a configuration error (accept() failing with EMFILE would stall every client)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    if soft != resource.RLIM_INFINITY and connections + FILES_BESIDE_CONNECTIONS > soft:
        raise ConfigError(
            f"max_connections + operator_max_connections is {connections}, but this process may open only "
            f"{soft} files ({FILES_BESIDE_CONNECTIONS} are kept for the node itself): lower max_connections "
            "or raise the hard limit (ulimit -Hn, LimitNOFILE=)"
        )


class Listener(Server):
    """granian's embedded server on a socket the node bound (see the module docstring)."""

    def __init__(self, sock: socket.socket, target: Any, **options: Any) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(target, address=host, port=port, **options)
        self.sock = sock

    def _init_shared_socket(self) -> None:
        # What granian's multi-process server hands its workers: a holder of an existing socket
        # (a duplicate, so granian and this object each close their own descriptor).
        self._ssp = None
        # granian's stub lacks SocketHolder's constructor (fd, uds, backlog), and its Server
        # declares _shd as None only.
        self._shd = SocketHolder(os.dup(self.sock.fileno()), False, self.backlog)  # type: ignore[call-arg,assignment]

    def close(self) -> None:
        self.sock.close()


def listener(sock: socket.socket, target: Any, settings: Settings, max_connections: int) -> Listener:
    """A Listener with the node's connection limits (README, "Connection limits")."""
    return Listener(
        sock,
        target,
        interface=Interfaces.RSGI,
        # HTTP/1.1 only: cleartext HTTP/2 (h2c) would bring bodies without Content-Length.
        http=HTTPModes.http1,
        runtime_threads=settings.http_runtime_threads,
        backlog=settings.listen_backlog,
        # granian's backpressure is a permit per connection, held from accept to close.
        backpressure=max_connections,
        http1_settings=HTTP1Settings(header_read_timeout=settings.http_header_timeout_ms),
        log_level=LogLevels.warning,
        log_dictconfig=GRANIAN_LOG_CONFIG,
        log_access=False,
        websockets=False,
    )
