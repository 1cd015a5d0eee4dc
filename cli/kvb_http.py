"""A lean HTTP/1.1 keep-alive client connection for the python engine: one request at a time.

An asyncio Protocol that writes a prebuilt request and reads the response by its
Content-Length, nothing more: httpx costs ~10x the CPU per request, which would make kvb
measure itself. A response without Content-Length (chunked) is not read: it counts as a
`bad_response` error and the connection is replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = b"\r\ncontent-length:"
CONNECTION_CLOSE = b"\r\nconnection: close"
MAX_HEADER_BYTES = 64 * 1024

# (connection, status or 0 when the request failed, error kind or "")
OnResponse = Callable[["Connection", int, str], None]


class Connection(asyncio.Protocol):
    """Sends what `send` is given; calls `on_response` once per request, whatever happens to it."""

    def __init__(self, on_response: OnResponse, on_lost: Callable[[Connection], None]) -> None:
        self.on_response = on_response
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.op = 0
        self.started_ns = 0  # when the request was sent, or due (open loop): latency is measured from it
        self.sent_ns = 0  # when it was written: the timeout counts from here
        self.in_flight = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, op: int, request: bytes, started_ns: int, now_ns: int) -> None:
        assert self.transport is not None
        self.op = op
        self.started_ns = started_ns
        self.sent_ns = now_ns
        self.in_flight = True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        end = buffer.find(HEADER_END)
        if end < 0:
            self.buffer = buffer
            if len(buffer) > MAX_HEADER_BYTES:
                self.fail("bad_response")
            return
        head = buffer[:end]
        at = head.find(CONTENT_LENGTH)
        if at < 0:  # the node sends lowercase names; others may not
            head = head.lower()
            at = head.find(CONTENT_LENGTH)
        if at < 0 or not self.in_flight:
            self.fail("bad_response")
            return
        line_end = head.find(b"\r\n", at + 2)
        try:
            length = int(head[at + len(CONTENT_LENGTH) : line_end if line_end >= 0 else len(head)])
            status = int(head[9:12])
        except ValueError:
            self.fail("bad_response")
            return
        total = end + 4 + length
        if len(buffer) < total:
            self.buffer = buffer
            return
        self.buffer = buffer[total:]
        self.in_flight = False
        if head.find(CONNECTION_CLOSE) >= 0 and self.transport is not None:
            self.transport.close()  # connection_lost replaces it
        self.on_response(self, status, "" if status < 400 else f"http_{status}")

    def fail(self, kind: str) -> None:
        """The request in flight failed: count it, drop the connection (connection_lost replaces it)."""
        if self.in_flight:
            self.in_flight = False
            self.on_response(self, 0, kind)
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_flight:
            self.in_flight = False
            self.on_response(self, 0, "closed")
        self.transport = None
        self.on_lost(self)
