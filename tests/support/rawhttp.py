"""Raw HTTP/1.1 over sockets, for the traffic an HTTP client library will not send: trickled
or stalled requests, bytes that are not valid headers, half-closed connections, and
connections from a second loopback address (127.0.0.2) so per-address limits can be tested
on one machine."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from typing import Any

OTHER_ADDRESS = "127.0.0.2"  # loopback too on Linux, but not one of the node's exempt addresses


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def connect(port: int, source: str = "127.0.0.1", timeout_s: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(timeout_s)
    sock.connect(("127.0.0.1", port))
    return sock


def request_head(method: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_response(sock: socket.socket, timeout_s: float = 10.0) -> RawResponse | None:
    """The next response on `sock`, or None when the server closed the connection first."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return RawResponse(int(status_line.split()[1]), headers, body)


def exchange(port: int, data: bytes, source: str = "127.0.0.1", timeout_s: float = 10.0) -> RawResponse | None:
    with connect(port, source, timeout_s) as sock:
        sock.sendall(data)
        return read_response(sock, timeout_s)


def closed_by_server(sock: socket.socket, deadline_s: float) -> bool:
    """Whether the server closes `sock` (any bytes it sends first are read and dropped) in time."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        sock.settimeout(max(0.01, end - time.monotonic()))
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def vm_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")
